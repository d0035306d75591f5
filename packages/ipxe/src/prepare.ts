import { loadConfig } from "@clusterplatform/core";
import { defaultTarget, ipxeWorkerSettings, sourceTreeFor } from "./build";

/**
 * `node packages/ipxe/dist/prepare.js`: prepare the object trees of IPXE_PREPARE_PLATFORMS (default:
 * every buildable platform) from the iPXE source, as scripts/setup does once after installing it,
 * so the first build after setup takes seconds. Exits 1 if a platform fails to prepare.
 */
async function main(): Promise<void> {
	const config = loadConfig();
	const settings = ipxeWorkerSettings(config);
	if (!settings.sourceDir) {
		console.log("ipxe prepare: no iPXE source tree (IPXE_SOURCE_DIR, or setup's install) — nothing to prepare");
		return;
	}
	const tree = sourceTreeFor({ ...settings, sourceDir: settings.sourceDir }, config);
	const logger = { info: (line: string) => console.log(line) };
	for (const platform of settings.preparePlatforms) {
		const started = Date.now();
		await tree.prepare(defaultTarget(platform), logger);
		console.log(`ipxe prepare: ${platform} ready (${((Date.now() - started) / 1000).toFixed(1)} s)`);
	}
}

main().catch((err: Error) => {
	console.error(`ipxe prepare: ${err.message}`);
	process.exit(1);
});
