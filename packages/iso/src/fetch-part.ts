import dns from "node:dns/promises";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { permanentFailure } from "@clusterplatform/core";

/**
 * Addresses a part URL may not point at (SSRF): loopback, private, link-local (cloud metadata at
 * 169.254.169.254), carrier-grade NAT, multicast, documentation and reserved ranges. Parts kept in
 * this provisioner's own store are read from the store and never reach this check.
 */
const NON_PUBLIC = new net.BlockList();
for (const [network, prefix] of [
	["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
	["192.0.0.0", 24], ["192.0.2.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24],
	["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
] as const) NON_PUBLIC.addSubnet(network, prefix, "ipv4");
for (const [network, prefix] of [
	["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96], ["100::", 64], ["2001:db8::", 32],
] as const) NON_PUBLIC.addSubnet(network, prefix, "ipv6");

export function isPublicAddress(address: string): boolean {
	const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
	if (mapped) return isPublicAddress(mapped[1]!);
	const family = net.isIP(address);
	if (family === 0) return false;
	return !NON_PUBLIC.check(address, family === 4 ? "ipv4" : "ipv6");
}

function hostOf(url: URL): string {
	return url.hostname.replace(/^\[|\]$/g, "");
}

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
	const host = hostOf(url);
	if (host === "localhost" || host.endsWith(".localhost")) return "must not point at this machine (localhost)";
	if (net.isIP(host) && !isPublicAddress(host)) return `must not point at a loopback, private or link-local address (${host})`;
	return null;
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
	const host = hostOf(url);
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
			lookup: ((_host: string, opts: { all?: boolean }, callback: (...args: unknown[]) => void) => {
				if (opts?.all) callback(null, [pinned]);
				else callback(null, pinned.address, pinned.family);
			}) as never,
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
