import { spawn } from "node:child_process";
import path from "node:path";
import * as tftp from "tftp";
import type { Lan } from "./netns";

const RUN_TS = path.join(__dirname, "run-ts.cjs");
const PROBE = path.join(__dirname, "pxe-probe.ts");

/**
 * Fetch a file from a TFTP server with the npm `tftp` client. The package is old: its errors
 * arrive as events or throws, and nothing bounds a silent server; this wrapper turns all of it
 * into one promise that settles within timeoutMs.
 */
export function tftpGet(host: string, file: string, timeoutMs = 15_000): Promise<Buffer> {
	return new Promise((resolve, reject) => {
		const chunks: Buffer[] = [];
		let settled = false;
		let stream: { abort(): void } | null = null;
		const settle = (err: Error | null) => {
			if (settled) return;
			settled = true;
			clearTimeout(timer);
			// A silent server leaves the client retrying (and its socket open) unless aborted.
			if (err) {
				try {
					stream?.abort();
				} catch {
					// already closed
				}
			}
			if (err) reject(err);
			else resolve(Buffer.concat(chunks));
		};
		const timer = setTimeout(() => settle(new Error(`TFTP ${file} from ${host}: no answer within ${timeoutMs} ms`)), timeoutMs);
		try {
			const client = tftp.createClient({ host, port: 69, retries: 2, timeout: 1000 });
			const get = client.createGetStream(file);
			stream = get;
			get.on("data", (chunk: Buffer) => chunks.push(chunk));
			get.on("error", (err: Error) => settle(err));
			get.on("end", () => settle(null));
		} catch (err) {
			settle(err as Error);
		}
	});
}

export interface PxeAnswer {
	from: string;
	type: number;
	yiaddr: string;
	siaddr: string;
	file: string;
	serverId: string | null;
	vendorClass: string | null;
	vendorText: string | null;
	menuItemType: number | null;
}

export interface PxeProbeResult {
	/** Answers to the DISCOVER: the router's offer and the distributor's proxy offer. */
	answers: PxeAnswer[];
	/** The proxy's answer to the follow-up boot-server request on port 4011 (it names the file). */
	bootServerAnswer: PxeAnswer | null;
}

/**
 * Broadcast a PXE (or UEFI HTTP boot: kind "http") DISCOVER inside the LAN (from the client
 * namespace) and collect the answers; from `mac` (lower-case, colons) when given, else a random one.
 */
export function pxeProbe(lan: Lan, arch: number, kind: "firmware" | "ipxe" | "http", listenMs = 3000, mac?: string): Promise<PxeProbeResult> {
	if (mac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) throw new Error(`pxeProbe: not a lower-case MAC: ${mac}`);
	return new Promise((resolve, reject) => {
		const child = spawn("ip", ["netns", "exec", lan.ns.client, process.execPath, RUN_TS, PROBE, String(arch), kind, String(listenMs), ...(mac ? [mac] : [])], { stdio: ["ignore", "pipe", "pipe"] });
		let out = "";
		let err = "";
		const timer = setTimeout(() => child.kill("SIGKILL"), listenMs + 15_000);
		child.stdout.on("data", (c: Buffer) => (out += c.toString()));
		child.stderr.on("data", (c: Buffer) => (err += c.toString()));
		child.on("exit", (code) => {
			clearTimeout(timer);
			const line = out.trim().split("\n").at(-1) ?? "";
			if (code !== 0 || !line.startsWith("{")) return reject(new Error(`pxe probe failed (${code}): ${err}${out}`));
			resolve(JSON.parse(line) as PxeProbeResult);
		});
	});
}
