import fs from "node:fs";
import fsp from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { invalid } from "@clusterplatform/core";
import { checkUrl } from "./validation";

export interface DownloadLimits {
	maxBytes: number;
	timeoutMs: number;
}

/** iPXE binaries are well under a megabyte; a boot file beyond this is refused. */
export const BOOT_FILE_LIMITS: DownloadLimits = { maxBytes: 32 * 1024 * 1024, timeoutMs: 120_000 };

/**
 * Fetch an http(s) URL into `file`, bounded in size and time. A failure is a 422 naming `field`
 * and nothing is left at `file`.
 */
export async function downloadTo(field: string, url: string, file: string, limits: DownloadLimits = BOOT_FILE_LIMITS): Promise<number> {
	checkUrl(field, url);
	const signal = AbortSignal.timeout(limits.timeoutMs);
	let bytes = 0;
	try {
		const res = await fetch(url, { signal, redirect: "follow" });
		if (!res.ok || !res.body) invalid(field, `download failed: HTTP ${res.status} from ${url}`);
		const declared = Number(res.headers.get("content-length") ?? "0");
		if (declared > limits.maxBytes) invalid(field, `is ${declared} bytes, more than the ${limits.maxBytes} allowed`);
		// pipeline() owns the file stream: an error opening or writing it rejects here, never escapes.
		await pipeline(
			Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>),
			async function* limit(source: AsyncIterable<Uint8Array>) {
				for await (const chunk of source) {
					bytes += chunk.length;
					if (bytes > limits.maxBytes) invalid(field, `is more than the ${limits.maxBytes} bytes allowed`);
					yield chunk;
				}
			},
			fs.createWriteStream(file, { mode: 0o644 }),
		);
		if (bytes === 0) invalid(field, `download from ${url} is empty`);
		return bytes;
	} catch (err) {
		await fsp.rm(file, { force: true });
		if ((err as Error).name === "ValidationError") throw err;
		const reason = signal.aborted ? `timed out after ${limits.timeoutMs} ms` : ((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message);
		invalid(field, `download from ${url} failed: ${reason}`);
	}
}
