import { randomUUID } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import {
	ConflictError,
	DataTypes,
	ID_PARAM,
	UNFINISHED,
	clampProgress,
	configOf,
	defineService,
	entityMixin,
	invalid,
	jobRowsMixin,
	queueProducerMixin,
	respondCreated,
	storeFor,
	JOB_ROW_FIELDS,
	type EntityMethods,
	type EntityVars,
	type JobRowColumns,
	type JobRowsMethods,
	type QueueProducerMethods,
	type QueueProducerVars,
} from "@clusterplatform/core";
import { mirrorPrefix, mirrorUrl } from "./layout";
import { MAX_SOURCE_LENGTH, parseSource, type MirrorSource } from "./source";
import { QUEUE, type MirrorJobData, type MirrorOutcome, type MirrorProgress } from "./worker";

const NAME_PARAM = {
	type: "string",
	pattern: /^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$/,
	messages: { stringPattern: "The 'name' field must be 1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit." },
} as const;

const SOURCE_PARAM = { type: "string", min: 1, max: MAX_SOURCE_LENGTH } as const;

const FIELDS = {
	name: { type: DataTypes.STRING(64), allowNull: false },
	source: { type: DataTypes.STRING(MAX_SOURCE_LENGTH), allowNull: false },
	/** "rsync" or "http", from the source's scheme. */
	kind: { type: DataTypes.STRING(8), allowNull: false },
	...JOB_ROW_FIELDS,
	/** The mirrored tree's base URL (dnf baseurl, kickstart `url --url=`), once a sync has completed. */
	url: { type: DataTypes.STRING(2048), allowNull: true },
	filesDone: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
	filesTotal: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
	bytesDone: { type: DataTypes.DOUBLE, allowNull: false, defaultValue: 0 },
	bytesTotal: { type: DataTypes.DOUBLE, allowNull: false, defaultValue: 0 },
	/** What the last completed sync did. */
	lastTransferred: { type: DataTypes.INTEGER, allowNull: true },
	lastUnchanged: { type: DataTypes.INTEGER, allowNull: true },
	lastRemoved: { type: DataTypes.INTEGER, allowNull: true },
	lastBytesMoved: { type: DataTypes.DOUBLE, allowNull: true },
	lastDurationMs: { type: DataTypes.INTEGER, allowNull: true },
	lastSyncedAt: { type: DataTypes.DATE, allowNull: true },
};

/** A mirror's row (FIELDS). */
interface MirrorColumns extends JobRowColumns {
	name: string;
	source: string;
	kind: "rsync" | "http";
	url: string | null;
	filesDone: number;
	filesTotal: number;
	bytesDone: number;
	bytesTotal: number;
	lastTransferred: number | null;
	lastUnchanged: number | null;
	lastRemoved: number | null;
	lastBytesMoved: number | null;
	lastDurationMs: number | null;
	lastSyncedAt: Date | null;
}

interface MirrorsMethods extends EntityMethods<MirrorColumns>, JobRowsMethods, QueueProducerMethods {
	checkedSource(raw: string): MirrorSource;
	startSync(id: number, source: string): Promise<void>;
	removeFiles(id: number): Promise<void>;
	dropOrphan(jobId: string): Promise<void>;
}

/** Job ids carry the mirror id, so the result of a job whose row was deleted can be cleaned up. */
function newJobId(id: number): string {
	return `mirror-${id}-${randomUUID()}`;
}

function mirrorIdOfJob(jobId: string): number | null {
	const match = /^mirror-(\d+)-/.exec(jobId);
	return match ? Number(match[1]) : null;
}

/**
 * /api/mirrors: OS package repositories mirrored into the object store by mirrors-worker, so
 * booting hosts install from the local copy. POST {name, source} mirrors `source` (rsync:// or an
 * http(s):// repository root holding repodata/repomd.xml); PUT /:id/sync mirrors it again (only
 * changes move); DELETE /:id removes the mirror and its files. Rows follow their job (status,
 * progress 0..100, files and bytes) and keep the last completed sync's figures.
 */
export const MirrorsService: ServiceSchema = defineService<MirrorsMethods, EntityVars<MirrorColumns> & QueueProducerVars>({
	name: "mirrors",
	mixins: [
		entityMixin({
			name: "mirrors",
			fields: FIELDS,
			params: { name: NAME_PARAM, source: SOURCE_PARAM },
			hiddenFields: ["jobId"],
			modelOptions: { indexes: [{ fields: ["jobId"] }] },
		}),
		queueProducerMixin(QUEUE),
		jobRowsMixin(QUEUE),
	],
	actions: {
		create: {
			async handler(ctx: Context<{ name: string; source: string }>) {
				const source = this.checkedSource(ctx.params.source);
				const row = await this.adapter.insert({ name: ctx.params.name, source: source.url, kind: source.kind, status: "queued", progress: 0, jobId: null });
				try {
					await this.startSync(row.id, source.url);
				} catch (err) {
					await this.adapter.removeById(row.id);
					throw err;
				}
				const json = await this.transformDocuments(ctx, {}, await this.findOrFail(row.id));
				await this.entityChanged("created", json, ctx);
				return respondCreated(ctx, json, `/api/mirrors/${json.id}`);
			},
		},
		update: false,
		/** Mirror again; only what changed at the source moves. 409 while a sync is queued or running. */
		sync: {
			rest: "PUT /:id/sync",
			params: { id: ID_PARAM, $$strict: true },
			async handler(ctx: Context<{ id: number }>) {
				const row = (await this.findOrFail(ctx.params.id)).get();
				if (UNFINISHED.includes(row.status)) throw new ConflictError(`mirror ${row.id} is already ${row.status}; wait until it is done or failed`, { id: row.id, status: row.status });
				const source = parseSource(row.source, configOf(this.broker).mirrorAllowedHosts);
				if (typeof source === "string") invalid("source", source);
				const previous = { status: row.status, progress: row.progress, error: row.error, jobId: row.jobId };
				// Claimed by a conditional update, so two concurrent re-syncs cannot both start.
				const [claimed] = await this.adapter.model.update({ status: "queued", progress: 0, error: null, filesDone: 0, bytesDone: 0, jobId: null }, { where: { id: row.id, status: row.status, jobId: row.jobId } });
				if (claimed === 0) throw new ConflictError(`mirror ${row.id} changed meanwhile; try again`, { id: row.id });
				try {
					await this.startSync(row.id, row.source);
				} catch (err) {
					await this.adapter.model.update(previous, { where: { id: row.id } });
					throw err;
				}
				const json = await this.transformDocuments(ctx, {}, await this.findOrFail(row.id));
				await this.entityChanged("updated", json, ctx);
				return json;
			},
		},
		remove: {
			async handler(ctx: Context<{ id: number }>) {
				const row = await this.findOrFail(ctx.params.id);
				const json = await this.transformDocuments(ctx, {}, row);
				const { jobId, status } = row.get();
				if (jobId && UNFINISHED.includes(status)) {
					// A waiting job goes; a running one cannot be removed (it is locked): its files are removed when it ends.
					await (await this.queue.getJob(jobId))?.remove().catch(() => undefined);
				}
				await this.adapter.removeById(ctx.params.id);
				await this.removeFiles(ctx.params.id);
				await this.entityChanged("removed", json, ctx);
				return json;
			},
		},
	},
	methods: {
		checkedSource(raw: string) {
			const source = parseSource(raw, configOf(this.broker).mirrorAllowedHosts);
			return typeof source === "string" ? invalid("source", source) : source;
		},
		/** A new job for the row; the row learns its job id first, so no event of it is missed. */
		async startSync(id: number, source: string) {
			const jobId = newJobId(id);
			await this.adapter.model.update({ jobId }, { where: { id } });
			await this.enqueueJob({ id, source } satisfies MirrorJobData, jobId);
		},
		/** The mirror's objects, and (through a purge job) the worker's rsync staging tree. */
		async removeFiles(id: number) {
			await storeFor(configOf(this.broker)).removePrefix(mirrorPrefix(id));
			await this.enqueue("purge", { id, source: "" } satisfies MirrorJobData, { jobId: `purge-${id}-${randomUUID()}`, attempts: 1 }).catch((err: Error) =>
				this.logger.warn(`mirror ${id}: its staging tree stays on the worker (no purge job: ${err.message})`),
			);
		},
		progressChanges(value: unknown) {
			if (typeof value !== "object" || value === null) {
				const progress = clampProgress(value);
				return progress === null ? null : { progress };
			}
			const p = value as Partial<MirrorProgress>;
			const progress = clampProgress(p.percent);
			if (progress === null) return null;
			const count = (n: unknown) => (typeof n === "number" && Number.isFinite(n) && n >= 0 ? n : 0);
			return { progress, filesDone: count(p.filesDone), filesTotal: count(p.filesTotal), bytesDone: count(p.bytesDone), bytesTotal: count(p.bytesTotal) };
		},
		async applyCompleted(jobId: string, outcome: MirrorOutcome | null) {
			if (!outcome || mirrorIdOfJob(jobId) === null) return;
			const url = mirrorUrl(storeFor(configOf(this.broker)), outcome.id);
			const count = await this.updateUnfinished(jobId, {
				status: "done", progress: 100, error: null, url,
				filesDone: outcome.filesTotal, filesTotal: outcome.filesTotal, bytesDone: outcome.bytesTotal, bytesTotal: outcome.bytesTotal,
				lastTransferred: outcome.transferred, lastUnchanged: outcome.unchanged, lastRemoved: outcome.removed,
				lastBytesMoved: outcome.bytesMoved, lastDurationMs: outcome.durationMs, lastSyncedAt: new Date(),
			});
			if (count === 0) await this.dropOrphan(jobId);
		},
		async applyFailed(jobId: string, reason: string) {
			if (mirrorIdOfJob(jobId) === null) return;
			const count = await this.updateUnfinished(jobId, { status: "failed", error: reason || "failed without a reason" });
			if (count === 0) await this.dropOrphan(jobId);
		},
		/** A job whose mirror was deleted while it ran: remove what it stored after the deletion. */
		async dropOrphan(jobId: string) {
			const id = mirrorIdOfJob(jobId);
			if (id !== null && !(await this.adapter.findById(id))) await this.removeFiles(id);
		},
		/** Its job vanished from the queue (Redis lost): sync again under a new job. */
		async requeueRow(row: MirrorColumns & { id: number }) {
			const jobId = newJobId(row.id);
			await this.adapter.model.update({ jobId, status: "queued", progress: 0 }, { where: { id: row.id } });
			await this.enqueue(QUEUE, { id: row.id, source: row.source } satisfies MirrorJobData, { jobId });
		},
	},
	async started() {
		await this.reconcile();
		this.startReconciling();
	},
	async stopped() {
		await this.stopReconciling();
	},
});
