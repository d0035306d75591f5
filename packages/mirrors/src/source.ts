import net from "node:net";
import { hostOfUrl, hostProblem, resolveCheckedHost } from "@clusterplatform/core";

/** How a mirror reaches its source: rsync's daemon protocol, or HTTP(S) with repodata/repomd.xml. */
export type SourceKind = "rsync" | "http";

export interface MirrorSource {
	kind: SourceKind;
	/** The URL as given, normalized to end with "/". */
	url: string;
	host: string;
	port: number;
	/** Path under the host, e.g. "/fedora/linux/releases/40/Everything/x86_64/os/". */
	path: string;
}

export const MAX_SOURCE_LENGTH = 2048;

/**
 * Characters a source path may hold. rsync daemons expand wildcards in module paths and take
 * spaces as separators, so the path is held to what repository trees use.
 */
const SAFE_PATH = /^\/[A-Za-z0-9._+~\/-]*$/;

/**
 * Parse a source URL, or return why it is refused (judged without DNS; the worker resolves and
 * checks the host again before it connects). `allowed` opens non-public hosts (MIRROR_ALLOWED_HOSTS).
 */
export function parseSource(raw: string, allowed: readonly string[] = []): MirrorSource | string {
	if (raw.length > MAX_SOURCE_LENGTH) return `must be at most ${MAX_SOURCE_LENGTH} characters`;
	if (/[\u0000-\u0020\u007f]/.test(raw)) return "must not contain spaces or control characters";
	// The URL parser would quietly resolve these; a source that names them is refused instead.
	if (/\/\.\.?(\/|$)/.test(raw.replace(/^[a-z]+:\/\//i, "/"))) return "path may not hold . or .. segments";
	if (raw.includes("%")) return "must not hold percent escapes";
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		return 'must be an absolute URL: "rsync://host[:port]/module/path/" or "http(s)://host/path/" (the directory holding repodata/)';
	}
	const kind: SourceKind | null = url.protocol === "rsync:" ? "rsync" : url.protocol === "http:" || url.protocol === "https:" ? "http" : null;
	if (!kind) return `must be an rsync:// or http(s):// URL, not ${url.protocol}`;
	if (url.username || url.password) return "must not carry credentials";
	if (url.search || url.hash) return "must not have a query or fragment";
	const host = hostOfUrl(url);
	const problem = hostProblem(host, allowed);
	if (problem) return `${problem}; an operator may allow it with MIRROR_ALLOWED_HOSTS`;
	const path = url.pathname.endsWith("/") ? url.pathname : `${url.pathname}/`;
	if (!SAFE_PATH.test(path) || path.split("/").some((part) => part === "." || part === "..")) {
		return "path may hold only letters, digits and . _ - + ~ / (no . or .. segments, no wildcards, no percent escapes)";
	}
	if (kind === "rsync" && path.split("/").filter(Boolean).length === 0) return "an rsync source must name a module: rsync://host/module/path/";
	const port = url.port ? Number(url.port) : kind === "rsync" ? 873 : url.protocol === "https:" ? 443 : 80;
	return { kind, url: `${url.protocol}//${url.host}${path}`, host, port, path };
}

/**
 * The rsync URL with the host replaced by its checked address: rsync resolves names itself, so the
 * address the check approved is the one it gets (no DNS change between check and connect).
 */
export async function pinnedRsyncUrl(source: MirrorSource, allowed: readonly string[]): Promise<string> {
	const { address } = await resolveCheckedHost(source.host, allowed);
	const host = net.isIPv6(address) ? `[${address}]` : address;
	return `rsync://${host}:${source.port}${source.path}`;
}
