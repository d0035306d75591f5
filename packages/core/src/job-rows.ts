import type { ServiceSchema } from "moleculer";
import type { Job, JobsOptions } from "bullmq";
import { DataTypes, Op } from "./db";
import { UnavailableError } from "./errors";
import type { QueueProducerMethods, QueueProducerVars } from "./queue";
import type { EntityVars, SystemColumns } from "./registry";
import { defineMixin } from "./service-schema";

/**
 * Rows that follow a BullMQ job (builders, mirrors): `status`, `progress`, `error` and a hidden
 * `jobId` column. Only the manager writes them; a worker never touches the database.
 */
export const JOB_STATUSES = ["queued", "working", "done", "failed"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const UNFINISHED: JobStatus[] = ["queued", "working"];

/** The columns every job row has; `jobId` is internal (hidden from the API, indexed by the entity). */
export const JOB_ROW_FIELDS = {
	status: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "queued" },
	progress: { type: DataTypes.FLOAT, allowNull: false, defaultValue: 0 },
	error: { type: DataTypes.TEXT, allowNull: true },
	jobId: { type: DataTypes.STRING(80), allowNull: true },
} as const;

/** The columns of JOB_ROW_FIELDS. */
export interface JobRowColumns {
	status: JobStatus;
	progress: number;
	error: string | null;
	jobId: string | null;
}

/** A job row's values as reconcile hands them to the host (`requeueRow`); the host knows its other columns. */
export type JobRowValues = JobRowColumns & SystemColumns & Record<string, unknown>;

const ENQUEUE_TIMEOUT_MS = 10_000;

export function clampProgress(value: unknown): number | null {
	const n = typeof value === "number" ? value : Number(value);
	if (!Number.isFinite(n)) return null;
	return Math.min(100, Math.max(0, n));
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
	let timer: NodeJS.Timeout;
	return Promise.race([
		promise,
		new Promise<never>((_, reject) => {
			timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
		}),
	]).finally(() => clearTimeout(timer));
}

/** Job events of one job are applied in the order they arrived; different jobs' go on independently. */
export class JobEventOrder {
	private readonly chains = new Map<string, Promise<unknown>>();

	serially(jobId: string, apply: () => Promise<unknown>): Promise<unknown> {
		const next = (this.chains.get(jobId) ?? Promise.resolve()).then(apply, apply);
		this.chains.set(jobId, next);
		return next.finally(() => {
			if (this.chains.get(jobId) === next) this.chains.delete(jobId);
		});
	}

	/** Settles once every event applied so far has been (a stopping manager waits for them). */
	async settled(): Promise<void> {
		await Promise.allSettled([...this.chains.values()]);
	}
}

/** What a service with job rows provides to jobRowsMixin. */
export interface JobRowsHost {
	/** Write a completed job's outcome (the worker's return value) to its row. */
	applyCompleted(jobId: string, outcome: unknown): Promise<unknown>;
	/** Queue the row's job again under a new job id (it vanished from the queue). */
	requeueRow(row: JobRowValues): Promise<void>;
}

/** The methods jobRowsMixin adds (the host may override progressChanges and applyFailed). */
export interface JobRowsMethods {
	enqueueJob(data: unknown, jobId: string, opts?: JobsOptions): Promise<Job>;
	serially(jobId: string, apply: () => Promise<unknown>): Promise<unknown>;
	updateUnfinished(jobId: string, changes: Record<string, unknown>): Promise<number>;
	progressChanges(value: unknown): Record<string, unknown> | null;
	applyFailed(jobId: string, reason: string): Promise<unknown>;
	onJobActive(jobId: string): Promise<unknown>;
	onJobProgress(jobId: string, value: unknown): Promise<unknown> | undefined;
	onJobCompleted(jobId: string, outcome: unknown): Promise<unknown>;
	onJobFailed(jobId: string, reason: string): Promise<unknown>;
	reconcile(minAgeMs?: number): Promise<void>;
	jobLocked(jobId: string): Promise<boolean>;
	reconcileRow(row: JobRowValues): Promise<unknown>;
	startReconciling(): void;
	stopReconciling(): Promise<void>;
}

export interface JobRowsVars extends EntityVars<JobRowColumns & Record<string, unknown>>, QueueProducerVars {
	jobEvents: JobEventOrder;
	reconcileTimer?: NodeJS.Timeout;
}

export interface JobRowsSettings {
	/** How often unfinished rows are checked against their jobs (ms). */
	reconcileInterval: number;
}

/**
 * Keeps job rows in line with their jobs: job events from BullMQ (active, progress, completed,
 * failed; see queueProducerMixin) are applied to the row in the order they arrived, and unfinished
 * rows are reconciled against the queue (`this.reconcile()`, and every `settings.reconcileInterval`
 * ms once `this.startReconciling()` runs), so an event missed while the manager was down cannot
 * leave a row "working" forever.
 *
 * The host is an entity whose columns include JOB_ROW_FIELDS, mixes in queueProducerMixin, and
 * provides JobRowsHost; it may override `progressChanges(value)` (columns a progress value sets)
 * and `applyFailed(jobId, reason)`.
 */
export function jobRowsMixin(name: string): Partial<ServiceSchema> {
	return defineMixin<JobRowsMethods & JobRowsHost & QueueProducerMethods, JobRowsVars, JobRowsSettings>({
		settings: {
			reconcileInterval: 30_000,
		},
		created() {
			this.jobEvents = new JobEventOrder();
		},
		methods: {
			/** Add a job, bounded in time: a queue that cannot take it is a 503, not a hang. */
			async enqueueJob(data: unknown, jobId: string, opts: JobsOptions = {}): Promise<Job> {
				try {
					return await withTimeout(this.enqueue(name, data, { ...opts, jobId }), ENQUEUE_TIMEOUT_MS, "enqueue");
				} catch (err) {
					throw new UnavailableError(`the ${name} queue is unavailable: ${(err as Error).message}`);
				}
			},
			serially(jobId: string, apply: () => Promise<unknown>): Promise<unknown> {
				return this.jobEvents.serially(jobId, apply);
			},
			/** Update the unfinished row of a job; finished rows are final. */
			async updateUnfinished(jobId: string, changes: Record<string, unknown>): Promise<number> {
				const [count] = await this.adapter.model.update(changes, { where: { jobId, status: { [Op.in]: UNFINISHED } } });
				return count;
			},
			/** Columns a progress value from the worker sets (default: a number 0..100 → `progress`). */
			progressChanges(value: unknown): Record<string, unknown> | null {
				const progress = clampProgress(value);
				return progress === null ? null : { progress };
			},
			applyFailed(jobId: string, reason: string) {
				return this.updateUnfinished(jobId, { status: "failed", error: reason || "failed without a reason" });
			},
			onJobActive(jobId: string) {
				return this.serially(jobId, () => this.updateUnfinished(jobId, { status: "working" }));
			},
			onJobProgress(jobId: string, value: unknown) {
				const changes = this.progressChanges(value);
				if (!changes) return;
				return this.serially(jobId, () => this.updateUnfinished(jobId, { status: "working", ...changes }));
			},
			onJobCompleted(jobId: string, outcome: unknown) {
				return this.serially(jobId, () => this.applyCompleted(jobId, typeof outcome === "string" ? JSON.parse(outcome) : outcome));
			},
			onJobFailed(jobId: string, reason: string) {
				return this.serially(jobId, () => this.applyFailed(jobId, reason));
			},
			/** Bring unfinished rows in line with their jobs (events may have been missed). */
			async reconcile(minAgeMs = 0) {
				const rows = await this.adapter.model.findAll({
					where: { status: { [Op.in]: UNFINISHED }, updatedAt: { [Op.lte]: new Date(Date.now() - minAgeMs) } },
				});
				for (const model of rows) {
					const row: JobRowValues = model.get();
					await this.serially(row.jobId ?? `row-${row.id}`, () => this.reconcileRow(row)).catch((err: Error) =>
						this.logger.warn(`${name} ${row.id}: reconcile failed: ${err.message}`),
					);
				}
			},
			/** Whether a live worker holds the job (BullMQ keeps `<job key>:lock` while it works on it). */
			async jobLocked(jobId: string): Promise<boolean> {
				// BullMQ 6 keeps the raw Redis client on its Redis backend; without one we cannot tell, and assume it is held.
				const client = await this.queue.backend.client;
				if (!client) return true;
				// The lock is a string key holding the worker's token (IRedisClient offers no EXISTS).
				return (await client.get(this.queue.toKey(`${jobId}:lock`))) !== null;
			},
			async reconcileRow(row: JobRowValues) {
				const job: Job | undefined = row.jobId ? await this.queue.getJob(row.jobId) : undefined;
				const state = job ? await job.getState() : "unknown";
				if (job && row.jobId) {
					if (state === "completed") return this.applyCompleted(row.jobId, job.returnvalue);
					if (state === "failed") return this.applyFailed(row.jobId, job.failedReason || "failed");
					if (state === "active") {
						// Active but nobody holds its lock: its worker died and no other worker has taken it over yet.
						if (!(await this.jobLocked(row.jobId))) return this.updateUnfinished(row.jobId, { status: "queued" });
						return this.updateUnfinished(row.jobId, { status: "working", ...(this.progressChanges(job.progress) ?? {}) });
					}
					if (state !== "unknown") return this.updateUnfinished(row.jobId, { status: "queued" });
				}
				// The job is gone (Redis lost, or never added): run it again under a new job.
				await this.requeueRow(row);
				this.logger.warn(`${name} ${row.id}: its job had disappeared from the queue; queued again`);
			},
			startReconciling() {
				const interval = Number(this.settings.reconcileInterval);
				if (!(interval > 0)) return;
				this.reconcileTimer = setInterval(() => {
					// Rows younger than one interval may still be between insert and enqueue.
					this.reconcile(Math.min(interval, 10_000)).catch((err: Error) => this.logger.warn(`${name}: reconcile failed: ${err.message}`));
				}, interval);
				this.reconcileTimer.unref();
			},
			async stopReconciling() {
				clearInterval(this.reconcileTimer);
				await this.jobEvents.settled();
			},
		},
	});
}
