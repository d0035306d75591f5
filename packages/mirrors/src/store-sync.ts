import fsp from "node:fs/promises";
import type { ObjectStore } from "@clusterplatform/core";
import { publishedLast, repoKey } from "./layout";
import type { Manifest } from "./manifest";

/** A file the mirror must hold after this sync, as the source describes it. */
export interface WantedFile {
	path: string;
	/** null when the source's index gives only a checksum (.treeinfo); learned when fetched. */
	size: number | null;
	/** "<algorithm>:<hex>" */
	checksum: string;
}

/** A local copy of a wanted file, verified against its checksum, and the bytes it took from the source. */
export interface Obtained {
	file: string;
	moved: number;
}

/** What a sync did, reported on the row. */
export interface SyncStats {
	/** Files stored because they were new or changed. */
	transferred: number;
	unchanged: number;
	removed: number;
	/** Bytes that came from the source (HTTP bodies, or rsync's received bytes). */
	bytesMoved: number;
	filesTotal: number;
	bytesTotal: number;
}

export interface SyncProgress {
	filesDone: number;
	filesTotal: number;
	bytesDone: number;
	bytesTotal: number;
}

export interface StoreSyncOptions {
	store: ObjectStore;
	id: number;
	manifest: Manifest;
	files: WantedFile[];
	/** Fetch (or find) a verified local copy of a file that is new or changed. */
	obtain(file: WantedFile): Promise<Obtained>;
	/** Called once a fetched copy is stored (e.g. to delete a downloaded file). */
	discard?(obtained: Obtained): Promise<void>;
	/** Called after each file with the running totals. */
	progress(progress: SyncProgress): Promise<void>;
	/** Files fetched and stored at once (default 1). */
	concurrency?: number;
	signal: AbortSignal;
}

/** Run `fn` over `items`, `limit` at a time; the first failure stops new work and is thrown once all running calls ended. */
async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
	let next = 0;
	let failure: { error: unknown } | null = null;
	const worker = async () => {
		while (failure === null && next < items.length) {
			const item = items[next++]!;
			try {
				await fn(item);
			} catch (error) {
				failure ??= { error };
			}
		}
	};
	await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
	if (failure !== null) throw (failure as { error: unknown }).error;
}

/**
 * Whether the store already holds exactly this file. The manifest is the record: an entry is
 * written only after its object was stored, and only a sync or DELETE removes objects; asking the
 * store about each of tens of thousands of files (an S3 HEAD each) would cost more than it proves.
 */
function alreadyStored(options: StoreSyncOptions, file: WantedFile): boolean {
	const entry = options.manifest.get(file.path);
	return entry !== undefined && entry.checksum === file.checksum && (file.size === null || entry.size === file.size);
}

/**
 * Bring the store in line with `files`: only new or changed files move; the indexes that name the
 * others (repomd.xml, Release, .treeinfo) are stored last, so a client never sees an index whose
 * files are not there yet; files no longer wanted are removed after that.
 */
export async function syncIntoStore(options: StoreSyncOptions): Promise<SyncStats> {
	const { store, id, manifest, files } = options;
	const stats: SyncStats = { transferred: 0, unchanged: 0, removed: 0, bytesMoved: 0, filesTotal: files.length, bytesTotal: files.reduce((sum, f) => sum + (f.size ?? 0), 0) };
	const progress: SyncProgress = { filesDone: 0, filesTotal: stats.filesTotal, bytesDone: 0, bytesTotal: stats.bytesTotal };
	const syncOne = async (file: WantedFile) => {
		options.signal.throwIfAborted();
		if (alreadyStored(options, file)) {
			stats.unchanged++;
		} else {
			const obtained = await options.obtain(file);
			const size = file.size ?? (await fsp.stat(obtained.file)).size;
			await store.putFile(repoKey(id, file.path), obtained.file);
			await manifest.set(file.path, { size, checksum: file.checksum });
			await options.discard?.(obtained);
			stats.transferred++;
			stats.bytesMoved += obtained.moved;
		}
		progress.filesDone++;
		progress.bytesDone += file.size ?? 0;
		await options.progress(progress);
	};
	// The indexes wait until every file they name is stored.
	await forEachLimited(files.filter((f) => !publishedLast(f.path)), options.concurrency ?? 1, syncOne);
	await forEachLimited(files.filter((f) => publishedLast(f.path)), 1, syncOne);
	const wanted = new Set(files.map((f) => f.path));
	for (const name of manifest.paths()) {
		if (wanted.has(name)) continue;
		await store.remove(repoKey(id, name));
		await manifest.delete(name);
		stats.removed++;
	}
	await manifest.save();
	return stats;
}
