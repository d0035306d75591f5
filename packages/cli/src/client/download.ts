import fs from "node:fs";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { waitForBuild } from "./build";
import type { CommandContext } from "./context";
import { segment } from "./context";
import { CliError, EXIT, usageError } from "./errors";
import { printJson } from "./output";
import { ProgressBar } from "./progress";
import { findResource } from "./resources";

/** A download that receives nothing for this long is given up. */
const STALL_MS = 60_000;

/** The file name a URL ends in, decoded; never a path (a hostile URL cannot aim outside the directory). */
function fileNameOf(url: string): string {
	let name: string;
	try {
		name = path.posix.basename(decodeURIComponent(new URL(url).pathname));
	} catch {
		return "";
	}
	return name === "." || name === ".." ? "" : name;
}

/**
 * `download <resource> <id> [-o file|-] [--wait]`: the row's artifact (its `url`), streamed to a
 * file (written as <file>.part and renamed when complete) and checked against Content-Length.
 */
export async function downloadCommand(ctx: CommandContext): Promise<void> {
	const resource = findResource(await ctx.allResources(), ctx.line.positionals[1]);
	const id = ctx.word(2, `the id of the ${resource.name} row to download`);
	ctx.noFields("download");
	const row = ctx.line.options.wait
		? await waitForBuild(ctx, resource.name, id)
		: await ctx.api.request<{ status?: string; progress?: number; error?: string | null; url?: string | null }>(`/${resource.name}/${segment(id)}`);
	if (row.status === "failed") throw new CliError(`${resource.name} ${id} failed: ${row.error ?? "no reason recorded"}; nothing to download`, EXIT.failed);
	if (row.status !== undefined && row.status !== "done") throw new CliError(`${resource.name} ${id} is ${row.status} (${Math.floor(row.progress ?? 0)}%), not done yet: add --wait`, EXIT.failed);
	if (typeof row.url !== "string" || !row.url) usageError(`${resource.name} ${id} has no artifact url to download`);
	const url = row.url;
	const target = ctx.line.options.output ?? fileNameOf(url);
	if (!target) usageError("give the output file with -o <file>");

	// No overall time limit (an ISO takes what it takes), but a download that stalls is given up.
	const stall = new AbortController();
	let stallTimer = setTimeout(() => stall.abort(), STALL_MS);
	const response = await ctx.api.fetch(url, { headers: ctx.api.isOwnUrl(url) ? ctx.api.headers() : {}, signal: stall.signal });
	if (!response.ok || !response.body) throw ctx.api.errorOf("GET", url.replace(/^.*?\/api/, ""), response.status, await ctx.api.text(response, "GET", url));
	const expected = Number(response.headers.get("content-length") ?? NaN);
	const bar = new ProgressBar(`download ${path.basename(target)}`, process.stderr, ctx.showProgress && target !== "-" && Number.isFinite(expected), 10);
	let received = 0;
	const counter = new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			received += chunk.length;
			clearTimeout(stallTimer);
			stallTimer = setTimeout(() => stall.abort(), STALL_MS);
			if (expected > 0) bar.update((received / expected) * 100);
			callback(null, chunk);
		},
	});
	const partial = target === "-" ? null : `${target}.part`;
	try {
		await pipeline(Readable.fromWeb(response.body as import("node:stream/web").ReadableStream), counter, partial ? fs.createWriteStream(partial) : process.stdout);
	} catch (err) {
		if (partial) fs.rmSync(partial, { force: true });
		throw new CliError(`download of ${url} broke off after ${received} bytes: ${(err as Error).message}`, EXIT.failed);
	} finally {
		clearTimeout(stallTimer);
		bar.finish();
	}
	if (Number.isFinite(expected) && received !== expected) {
		if (partial) fs.rmSync(partial, { force: true });
		throw new CliError(`download of ${url} is incomplete: ${received} of ${expected} bytes`, EXIT.failed);
	}
	if (partial) fs.renameSync(partial, target);
	if (target === "-") return;
	if (ctx.out.json) return printJson({ file: path.resolve(target), bytes: received, url });
	process.stdout.write(ctx.out.quiet ? `${target}\n` : `${target}: ${received} bytes from ${url}\n`);
}
