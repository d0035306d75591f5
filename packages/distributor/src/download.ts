import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { pipeline } from "node:stream/promises";
import { hostOfUrl, hostProblem, invalid, pinnedLookup, resolveCheckedHost, type CheckedAddress, type Config } from "@clusterplatform/core";
import { checkUrl } from "./validation";

export interface DownloadLimits {
	maxBytes: number;
	timeoutMs: number;
}

/** iPXE binaries are well under a megabyte; a boot file beyond this is refused. */
export const BOOT_FILE_LIMITS: DownloadLimits = { maxBytes: 32 * 1024 * 1024, timeoutMs: 120_000 };

/**
 * Where boot files may come from although their address is loopback, private or link-local
 * (a boot LAN's distributor fetches iPXE from the cluster, which may sit on a private network).
 */
export interface BootFileSources {
	/** Origins (scheme://host:port) allowed whatever their address, on that port only: the cluster's gateway and object store. */
	origins: readonly string[];
	/** Hosts or addresses an operator opened, on any port (BOOT_FILE_ALLOWED_HOSTS). */
	hosts: readonly string[];
}

/** Public addresses only. */
export const PUBLIC_SOURCES_ONLY: BootFileSources = { origins: [], hosts: [] };

export interface DownloadOptions extends DownloadLimits {
	sources: BootFileSources;
}

/** The sources a distributor with this configuration may use: its PUBLIC_URL's and S3_PUBLIC_URL's origins, and BOOT_FILE_ALLOWED_HOSTS. */
export function bootFileSources(config: Config): BootFileSources {
	const bases = [config.publicUrl, ...(config.store.kind === "s3" ? [config.store.publicUrl] : [])];
	return { origins: bases.map((base) => new URL(base).origin), hosts: config.bootFileAllowedHosts };
}

const ALLOW_HINT = "an operator may allow it with BOOT_FILE_ALLOWED_HOSTS";

/**
 * The address to connect to, checked like ISO parts' (packages/iso/src/fetch-part.ts): every
 * address the host resolves to must be public unless `sources` opens it. Refusals name the host
 * as given, never what it resolved to.
 */
async function checkedAddress(field: string, url: URL, sources: BootFileSources): Promise<CheckedAddress> {
	const host = hostOfUrl(url);
	const allowed = sources.origins.includes(url.origin) ? [host.toLowerCase()] : sources.hosts;
	const problem = hostProblem(host, allowed);
	if (problem) invalid(field, `${problem}; ${ALLOW_HINT}`);
	try {
		return await resolveCheckedHost(host, allowed);
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code) invalid(field, `download failed: ${host} does not resolve`);
		invalid(field, `${host} resolves to a loopback, private or link-local address; ${ALLOW_HINT}`);
	}
}

/** GET over a fresh connection to exactly the checked address (no DNS between check and connect, no pooled socket). */
function get(url: URL, pinned: CheckedAddress, signal: AbortSignal): Promise<http.IncomingMessage> {
	const client = url.protocol === "https:" ? https : http;
	return new Promise((resolve, reject) => {
		const request = client.get(url, { agent: false, signal, lookup: pinnedLookup(pinned) }, resolve);
		request.once("error", reject);
	});
}

/** What a failed transfer says: never the low-level cause (an error naming address and port would make the distributor a port scanner). */
function failureReason(err: Error & { syscall?: string; path?: string; code?: string }, answered: boolean, signal: AbortSignal, timeoutMs: number): string {
	if (signal.aborted) return `download failed: no complete answer within ${timeoutMs} ms`;
	// A local file error is the distributor's own (a full disk), worth naming.
	if (err.path !== undefined) return `could not be saved on the distributor (${err.code ?? "error"})`;
	return answered ? "download failed: the connection broke off" : "download failed: could not connect";
}

/**
 * Fetch an http(s) URL into `file`, bounded in size and time, from a checked address; redirects
 * are not followed. A failure is a 422 naming `field` and nothing is left at `file`.
 * `options.sources` opens non-public hosts (bootFileSources(config)); by default only public ones.
 */
export async function downloadTo(field: string, url: string, file: string, options: Partial<DownloadOptions> = {}): Promise<number> {
	checkUrl(field, url);
	const { maxBytes, timeoutMs } = { ...BOOT_FILE_LIMITS, ...options };
	const target = new URL(url);
	const pinned = await checkedAddress(field, target, options.sources ?? PUBLIC_SOURCES_ONLY);
	const signal = AbortSignal.timeout(timeoutMs);
	let bytes = 0;
	let answered = false;
	try {
		const response = await get(target, pinned, signal);
		answered = true;
		const status = response.statusCode ?? 0;
		if (status !== 200) {
			response.destroy();
			if (status >= 300 && status < 400) invalid(field, `download failed: HTTP ${status}, a redirect (not followed: give the URL it leads to)`);
			invalid(field, `download failed: HTTP ${status}`);
		}
		const declared = Number(response.headers["content-length"] ?? "0");
		if (declared > maxBytes) {
			response.destroy();
			invalid(field, `is ${declared} bytes, more than the ${maxBytes} allowed`);
		}
		// pipeline() owns the file stream: an error opening or writing it rejects here, never escapes.
		await pipeline(
			response,
			async function* limit(source: AsyncIterable<Buffer>) {
				for await (const chunk of source) {
					bytes += chunk.length;
					if (bytes > maxBytes) invalid(field, `is more than the ${maxBytes} bytes allowed`);
					yield chunk;
				}
			},
			fs.createWriteStream(file, { mode: 0o644 }),
			{ signal },
		);
		if (bytes === 0) invalid(field, "download is empty");
		return bytes;
	} catch (err) {
		await fsp.rm(file, { force: true });
		if ((err as Error).name === "ValidationError") throw err;
		invalid(field, failureReason(err as Error, answered, signal, timeoutMs));
	}
}
