import fsp from "node:fs/promises";
import path from "node:path";
import type { ServiceSchema } from "moleculer";
import { clampProgress, jobWorkerMixin, permanentFailure, storeFor, type Config, type JobRun, type ObjectStore } from "@clusterplatform/core";
import { HttpRepository, listRepository } from "./http-sync";
import { repoKey } from "./layout";
import { Manifest } from "./manifest";
import { listStaging, rsyncIntoStaging } from "./rsync-sync";
import { parseSource, pinnedRsyncUrl, type MirrorSource } from "./source";
import { syncIntoStore, type SyncProgress, type SyncStats } from "./store-sync";

export const QUEUE = "mirrors";

/** A sync job: mirror `id` from `source` into the store. A "purge" job removes a deleted mirror's staging dir. */
export interface MirrorJobData {
	id: number;
	source: string;
}

/** What a sync job hands back; the manager writes it onto the row. */
export interface MirrorOutcome extends SyncStats {
	id: number;
	durationMs: number;
}

/** The progress a job reports (BullMQ passes it on to the manager as is). */
export interface MirrorProgress extends SyncProgress {
	percent: number;
}

/** The longest one sync may take (a first mirror of a large distribution takes hours). */
const SYNC_TIME_LIMIT_MS = 24 * 3600 * 1000;
const PROGRESS_EVERY_MS = 500;
/** Files fetched and stored at once: hides per-request latency of the source and of an S3 store. */
const TRANSFERS_AT_ONCE = 4;

/** Where a mirror's rsync staging tree and hash cache live on this worker (persistent: rsync's delta works from it). */
export function stagingDir(config: Config, id: number): string {
	const root = path.join(config.dataDir, "mirror-staging");
	const dir = path.join(root, String(mirrorId(id)));
	// Belt and braces: the tree rsync --delete writes into and a purge removes is one level under the root.
	if (path.dirname(dir) !== root) permanentFailure(`id: ${String(id).slice(0, 40)} names no directory under the mirror staging root`);
	return dir;
}

/**
 * A job's mirror id, checked before it names anything on disk or in the store: whoever can write
 * to Redis can enqueue a job, and the id picks the directory rsync --delete and a purge work on.
 */
export function mirrorId(value: unknown): number {
	if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
		permanentFailure(`id: must be a positive integer (a mirror's id), got ${(JSON.stringify(value) ?? String(value)).slice(0, 40)}`);
	}
	return value;
}

interface SyncContext {
	id: number;
	source: MirrorSource;
	config: Config;
	store: ObjectStore;
	manifest: Manifest;
	workDir: string;
	signal: AbortSignal;
	/** Report progress; `force` bypasses the throttle. */
	report(progress: MirrorProgress, force?: boolean): Promise<void>;
	logger: JobRun<MirrorJobData>["logger"];
}

/** Percent of a sync phase that spans `from`..`to` of the whole job. */
function phase(from: number, to: number, progress: SyncProgress): number {
	const share = progress.bytesTotal > 0 ? progress.bytesDone / progress.bytesTotal : progress.filesTotal > 0 ? progress.filesDone / progress.filesTotal : 1;
	return from + (to - from) * share;
}

/** HTTP(S): list the repository from its metadata, then move only what is new or changed. */
async function syncHttp(ctx: SyncContext): Promise<SyncStats> {
	const repo = await HttpRepository.open(ctx.source, ctx.config.mirrorAllowedHosts, ctx.signal, ctx.config.mirrorMaxFileBytes);
	try {
		const listing = await listRepository(repo, ctx.workDir, ctx.signal, async (file, local) => {
			const entry = ctx.manifest.get(file.path);
			if (!entry || entry.checksum !== file.checksum || entry.size !== file.size) return false;
			if ((await ctx.store.stat(repoKey(ctx.id, file.path)))?.size !== file.size) return false;
			if (local) await ctx.store.download(repoKey(ctx.id, file.path), local);
			return true;
		});
		await ctx.report({ percent: 5, filesDone: 0, filesTotal: listing.files.length, bytesDone: 0, bytesTotal: 0 }, true);
		let index = 0;
		const stats = await syncIntoStore({
			store: ctx.store,
			id: ctx.id,
			manifest: ctx.manifest,
			files: listing.files,
			signal: ctx.signal,
			obtain: async (file) => {
				const known = listing.fetched.get(file.path);
				if (known) return known;
				const local = path.join(ctx.workDir, "files", String(index++));
				const moved = await repo.download(file.path, local, { checksum: file.checksum, size: file.size });
				return { file: local, moved };
			},
			// Downloaded copies are not needed once stored.
			discard: (obtained) => fsp.rm(obtained.file, { force: true }),
			progress: (progress) => ctx.report({ percent: phase(5, 100, progress), ...progress }),
			concurrency: TRANSFERS_AT_ONCE,
		});
		ctx.logger.info(`mirror ${ctx.id}: ${repo.requests} requests, ${repo.bytesReceived} bytes from ${ctx.source.url}`);
		return { ...stats, bytesMoved: repo.bytesReceived };
	} finally {
		repo.close();
	}
}

/** rsync: let rsync bring the persistent staging tree up to date (delta, resume), then move changed files to the store. */
async function syncRsync(ctx: SyncContext): Promise<SyncStats> {
	let url: string;
	try {
		url = await pinnedRsyncUrl(ctx.source, ctx.config.mirrorAllowedHosts);
	} catch (err) {
		return permanentFailure(`source: ${(err as Error).message}`);
	}
	const base = stagingDir(ctx.config, ctx.id);
	const tree = path.join(base, "tree");
	let lastPercent = -1;
	const rsync = await rsyncIntoStaging(url, tree, ctx.signal, (percent) => {
		if (percent === lastPercent) return;
		lastPercent = percent;
		void ctx.report({ percent: percent * 0.6, filesDone: 0, filesTotal: 0, bytesDone: 0, bytesTotal: 0 }).catch(() => undefined);
	});
	const files = await listStaging(tree, path.join(base, "hashes.json"), ctx.signal);
	const stats = await syncIntoStore({
		store: ctx.store,
		id: ctx.id,
		manifest: ctx.manifest,
		files,
		signal: ctx.signal,
		obtain: async (file) => ({ file: path.join(tree, ...file.path.split("/")), moved: 0 }),
		progress: (progress) => ctx.report({ percent: phase(60, 100, progress), ...progress }),
		concurrency: TRANSFERS_AT_ONCE,
	});
	ctx.logger.info(`mirror ${ctx.id}: rsync moved ${rsync.filesTransferred} files, ${rsync.bytesReceived} bytes from ${ctx.source.url}`);
	return { ...stats, bytesMoved: rsync.bytesReceived };
}

/** Run one sync job in its private work dir; the manifest in the store makes a retry resume. */
export async function runMirrorJob({ job, id, workDir, config, logger, signal }: JobRun<MirrorJobData>): Promise<MirrorOutcome> {
	const started = Date.now();
	if (typeof job.data.source !== "string") permanentFailure("source: must be a string");
	const source = parseSource(job.data.source, config.mirrorAllowedHosts);
	if (typeof source === "string") permanentFailure(`source: ${source}`);
	const store = storeFor(config);
	let reportedAt = 0;
	const report = async (progress: MirrorProgress, force = false) => {
		if (!force && Date.now() - reportedAt < PROGRESS_EVERY_MS) return;
		reportedAt = Date.now();
		// Progress is for watching; a Redis hiccup while reporting it must not fail the sync.
		await job.updateProgress({ ...progress, percent: Math.round((clampProgress(progress.percent) ?? 0) * 10) / 10 }).catch((err: Error) => logger.warn(`mirror ${id}: progress not reported: ${err.message}`));
	};
	const manifest = await Manifest.load(store, id, workDir);
	const ctx: SyncContext = { id, source, config, store, manifest, workDir, signal, report, logger };
	const stats = source.kind === "http" ? await syncHttp(ctx) : await syncRsync(ctx);
	return { id, ...stats, durationMs: Date.now() - started };
}

/**
 * mirrors-worker: runs sync jobs from the "mirrors" queue, one at a time per process. It never
 * touches the database: progress and the outcome go back through BullMQ to the manager.
 */
export const MirrorsWorkerService: ServiceSchema = {
	name: "mirrors-worker",
	mixins: [
		jobWorkerMixin<MirrorJobData, MirrorOutcome | null>({
			queue: QUEUE,
			concurrency: 1,
			lockDuration: 30_000,
			timeoutMs: SYNC_TIME_LIMIT_MS,
			what: "sync",
			idOf: (job) => mirrorId(job.data?.id),
			async run(run) {
				if (run.job.name === "purge") {
					await fsp.rm(stagingDir(run.config, run.id), { recursive: true, force: true });
					return null;
				}
				return runMirrorJob(run);
			},
		}),
	],
};
