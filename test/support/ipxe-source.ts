import { loadConfig } from "@clusterplatform/core";
import { ipxeWorkerSettings } from "@clusterplatform/ipxe";

/**
 * The iPXE source tree the tests build from: IPXE_SOURCE_DIR, or the one scripts/setup installed.
 * Null (with the reason) when there is none; under CI=true a suite must then fail, never skip.
 */
export function ipxeSource(): { sourceDir: string | null; reason: string | null } {
	const { sourceDir } = ipxeWorkerSettings(loadConfig());
	return { sourceDir, reason: sourceDir ? null : "no iPXE source tree: run scripts/setup with IPXE_SOURCE_TARBALL or network access, or set IPXE_SOURCE_DIR" };
}
