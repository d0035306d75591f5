import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { ExecError, exec, permanentFailure, requireBinary } from "@clusterplatform/core";
import type { WantedFile } from "./store-sync";

/** rsync exit codes a retry cannot fix: syntax, protocol, unknown module or refused access. */
const PERMANENT_EXIT_CODES = new Set([1, 2, 4]);
/** "Partial transfer due to vanished source files": the source changed under us; what is here is consistent enough to store. */
const VANISHED = 24;

export interface RsyncOutcome {
	/** Bytes rsync received from the source (its delta transfer, not the tree's size). */
	bytesReceived: number;
	filesTransferred: number;
}

/**
 * The rsync arguments: recursive with times (unchanged files are skipped by size and mtime), files
 * deleted at the source deleted here, partial files kept so an interrupted transfer resumes, and
 * no symlinks, devices or permissions taken from the source (symlinks are skipped: a store holds
 * files). The source is the URL with the checked address in place of the host name.
 */
export function rsyncArgs(source: string, staging: string): string[] {
	return [
		"--recursive", "--times", "--delete", "--delete-delay", "--partial",
		"--no-motd", "--contimeout=30", "--timeout=300",
		"--chmod=Du=rwx,Dgo=rx,Fu=rw,Fgo=r",
		"--stats", "--info=progress2", "--no-inc-recursive",
		source, `${staging}/`,
	];
}

function statNumber(output: string, label: string): number {
	const match = new RegExp(`^${label}: ([\\d,.]+)`, "m").exec(output);
	return match ? Number(match[1]!.replace(/[,.]/g, "")) : 0;
}

/** Run rsync into the staging dir, reporting its overall percent as it goes. */
export async function rsyncIntoStaging(source: string, staging: string, signal: AbortSignal, onPercent: (percent: number) => void): Promise<RsyncOutcome> {
	const rsync = requireBinary("rsync", "rsync");
	await fsp.mkdir(staging, { recursive: true });
	const args = rsyncArgs(source, staging);
	const result = await exec(rsync, args, {
		signal,
		timeout: 24 * 3600 * 1000,
		onOutput: (chunk) => {
			const percents = [...chunk.matchAll(/\s(\d{1,3})%\s/g)];
			if (percents.length) onPercent(Number(percents[percents.length - 1]![1]));
		},
	});
	if (result.code !== 0 && result.code !== VANISHED) {
		const error = new ExecError(rsync, args, { ...result, stdout: result.stdout.split(/[\r\n]/).filter((l) => !/%/.test(l)).join("\n") });
		const unknownModule = /@ERROR|Unknown module|access denied|auth failed/i.test(result.stdout + result.stderr);
		if (PERMANENT_EXIT_CODES.has(result.code) || (result.code === 5 && unknownModule)) permanentFailure(`source: ${error.message}`);
		throw error;
	}
	return {
		bytesReceived: statNumber(result.stdout, "Total bytes received"),
		filesTransferred: statNumber(result.stdout, "Number of regular files transferred"),
	};
}

interface CachedHash {
	size: number;
	mtimeMs: number;
	sha256: string;
}

async function sha256Of(file: string): Promise<string> {
	const hash = createHash("sha256");
	await pipeline(fs.createReadStream(file), hash);
	return hash.digest("hex");
}

/**
 * Every regular file of the staging tree with its SHA-256. Hashes are cached by size and mtime in
 * `cacheFile`, so files rsync left alone are not read again.
 */
export async function listStaging(staging: string, cacheFile: string, signal: AbortSignal): Promise<WantedFile[]> {
	const cache: Record<string, CachedHash> = JSON.parse(await fsp.readFile(cacheFile, "utf8").catch(() => "{}"));
	const next: Record<string, CachedHash> = {};
	const files: WantedFile[] = [];
	const entries = await fsp.readdir(staging, { recursive: true, withFileTypes: true });
	for (const entry of entries) {
		if (!entry.isFile()) continue;
		signal.throwIfAborted();
		const full = path.join(entry.parentPath, entry.name);
		const relative = path.relative(staging, full).split(path.sep).join("/");
		const stats = await fsp.stat(full);
		const cached = cache[relative];
		const sha256 = cached && cached.size === stats.size && cached.mtimeMs === stats.mtimeMs ? cached.sha256 : await sha256Of(full);
		next[relative] = { size: stats.size, mtimeMs: stats.mtimeMs, sha256 };
		files.push({ path: relative, size: stats.size, checksum: `sha256:${sha256}` });
	}
	await fsp.writeFile(cacheFile, JSON.stringify(next));
	return files.sort((a, b) => (a.path < b.path ? -1 : 1));
}
