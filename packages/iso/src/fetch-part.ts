import dns from "node:dns/promises";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { hostOfUrl, hostProblem, isPublicAddress, permanentFailure, pinnedLookup } from "@clusterplatform/core";

export { isPublicAddress };

/**
 * Why a part URL cannot be fetched, judged without DNS (at POST time), or null. Host names are
 * resolved and checked again when the part is fetched.
 */
export function urlProblem(raw: string): string | null {
	// The URL parser would quietly percent-encode these; a part URL never needs them.
	if (/[\u0000-\u0020\u007f]/.test(raw)) return "must not contain spaces or control characters";
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		return "must be an absolute http(s) URL";
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") return `must be an http(s) URL, not ${url.protocol}`;
	if (url.username || url.password) return "must not carry credentials";
	return hostProblem(hostOfUrl(url));
}

export interface FetchOptions {
	signal: AbortSignal;
	/** Largest part accepted, bytes. */
	maxBytes: number;
	timeoutMs: number;
}

/**
 * Download an http(s) URL to a file after checking every address its host resolves to, then
 * connect to exactly the checked address (no DNS rebinding between check and connect). Redirects
 * are not followed. A refused or missing part fails the build for good; a 5xx or network error is
 * retried by the queue.
 */
export async function fetchPublicUrl(field: string, raw: string, file: string, options: FetchOptions): Promise<void> {
	const problem = urlProblem(raw);
	if (problem) permanentFailure(`${field}: ${problem}`);
	const url = new URL(raw);
	const host = hostOfUrl(url);
	const addresses = net.isIP(host) ? [{ address: host, family: net.isIP(host) }] : await dns.lookup(host, { all: true });
	if (addresses.length === 0) throw new Error(`${field}: ${host} does not resolve`);
	const refused = addresses.find((a) => !isPublicAddress(a.address));
	if (refused) permanentFailure(`${field}: ${host} resolves to ${refused.address}, a loopback, private or link-local address; refused`);
	const pinned = addresses[0]!;
	const client = url.protocol === "https:" ? https : http;
	const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
		const request = client.get(url, {
			signal: options.signal,
			timeout: options.timeoutMs,
			lookup: pinnedLookup(pinned),
		});
		request.once("response", resolve);
		request.once("timeout", () => request.destroy(new Error(`${field}: no answer from ${host} within ${options.timeoutMs} ms`)));
		request.once("error", reject);
	});
	if (response.statusCode !== 200) {
		response.resume();
		const message = `${field}: ${raw} answered HTTP ${response.statusCode}`;
		if ((response.statusCode ?? 500) < 500) permanentFailure(message);
		throw new Error(message);
	}
	let received = 0;
	const limit = new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			received += chunk.length;
			if (received > options.maxBytes) callback(new Error(`${field}: larger than ${options.maxBytes} bytes`));
			else callback(null, chunk);
		},
	});
	await pipeline(response, limit, fs.createWriteStream(file), { signal: options.signal });
}
