import type { ServiceSchema } from "moleculer";
import type { Job, JobsOptions } from "bullmq";
import { DataTypes, Op } from "./db";
import { UnavailableError } from "./errors";

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

/**
 * Keeps job rows in line with their jobs: job events from BullMQ (active, progress, completed,
 * failed; see queueProducerMixin) are applied to the row in the order they arrived, and unfinished
 * rows are reconciled against the queue (`this.reconcile()`, and every `settings.reconcileInterval`
 * ms once `this.startReconciling()` runs), so an event missed while the manager was down cannot
 * leave a row "working" forever.
 *
 * The service provides `applyCompleted(jobId, outcome)` and `requeueRow(row)` (queue the row's job
 * again when it vanished from the queue), and may override `progressChanges(value)` (columns a
 * progress value sets) and `applyFailed(jobId, reason)`.
 */
export function jobRowsMixin(name: string): Partial<ServiceSchema> {
	return {
		settings: {
			/** How often unfinished rows are checked against their jobs (ms). */
			reconcileInterval: 30_000,
		},
		methods: {
			/** Add a job, bounded in time: a queue that cannot take it is a 503, not a hang. */
			async enqueueJob(this: any, data: unknown, jobId: string, opts: JobsOptions = {}): Promise<Job> {
				try {
					return await withTimeout(this.enqueue(name, data, { ...opts, jobId }), ENQUEUE_TIMEOUT_MS, "enqueue");
				} catch (err) {
					throw new UnavailableError(`the ${name} queue is unavailable: ${(err as Error).message}`);
				}
			},
			/** Job events of one job are applied in the order they arrived. */
			serially(this: any, jobId: string, apply: () => Promise<void>): Promise<void> {
				const chains: Map<string, Promise<void>> = (this.eventChains ??= new Map());
				const next = (chains.get(jobId) ?? Promise.resolve()).then(apply, apply);
				chains.set(jobId, next);
				return next.finally(() => {
					if (chains.get(jobId) === next) chains.delete(jobId);
				});
			},
			/** Update the unfinished row of a job; finished rows are final. */
			async updateUnfinished(this: any, jobId: string, changes: Record<string, unknown>): Promise<number> {
				const [count] = await this.adapter.model.update(changes, { where: { jobId, status: { [Op.in]: UNFINISHED } } });
				return count;
			},
			/** Columns a progress value from the worker sets (default: a number 0..100 → `progress`). */
			progressChanges(value: unknown): Record<string, unknown> | null {
				const progress = clampProgress(value);
				return progress === null ? null : { progress };
			},
			applyFailed(this: any, jobId: string, reason: string) {
				return this.updateUnfinished(jobId, { status: "failed", error: reason || "failed without a reason" });
			},
			onJobActive(this: any, jobId: string) {
				return this.serially(jobId, () => this.updateUnfinished(jobId, { status: "working" }));
			},
			onJobProgress(this: any, jobId: string, value: unknown) {
				const changes = this.progressChanges(value);
				if (!changes) return;
				return this.serially(jobId, () => this.updateUnfinished(jobId, { status: "working", ...changes }));
			},
			onJobCompleted(this: any, jobId: string, outcome: unknown) {
				return this.serially(jobId, () => this.applyCompleted(jobId, typeof outcome === "string" ? JSON.parse(outcome) : outcome));
			},
			onJobFailed(this: any, jobId: string, reason: string) {
				return this.serially(jobId, () => this.applyFailed(jobId, reason));
			},
			/** Bring unfinished rows in line with their jobs (events may have been missed). */
			async reconcile(this: any, minAgeMs = 0) {
				const rows = await this.adapter.model.findAll({
					where: { status: { [Op.in]: UNFINISHED }, updatedAt: { [Op.lte]: new Date(Date.now() - minAgeMs) } },
				});
				for (const model of rows) {
					const row = model.get();
					await this.serially(row.jobId ?? `row-${row.id}`, () => this.reconcileRow(row)).catch((err: Error) =>
						this.logger.warn(`${name} ${row.id}: reconcile failed: ${err.message}`),
					);
				}
			},
			/** Whether a live worker holds the job (BullMQ keeps `<job key>:lock` while it works on it). */
			async jobLocked(this: any, jobId: string): Promise<boolean> {
				// BullMQ 6 keeps the raw Redis client on its Redis backend; without one we cannot tell, and assume it is held.
				const client = await (this.queue.backend?.client ?? this.queue.client);
				if (!client) return true;
				return (await client.exists(this.queue.toKey(`${jobId}:lock`))) === 1;
			},
			async reconcileRow(this: any, row: Record<string, any>) {
				const job: Job | undefined = row.jobId ? await this.queue.getJob(row.jobId) : undefined;
				const state = job ? await job.getState() : "unknown";
				if (job && state === "completed") return this.applyCompleted(row.jobId, job.returnvalue);
				if (job && state === "failed") return this.applyFailed(row.jobId, job.failedReason || "failed");
				if (job && state === "active") {
					// Active but nobody holds its lock: its worker died and no other worker has taken it over yet.
					if (!(await this.jobLocked(row.jobId))) return this.updateUnfinished(row.jobId, { status: "queued" });
					return this.updateUnfinished(row.jobId, { status: "working", ...(this.progressChanges(job.progress) ?? {}) });
				}
				if (job && state !== "unknown") return this.updateUnfinished(row.jobId, { status: "queued" });
				// The job is gone (Redis lost, or never added): run it again under a new job.
				await this.requeueRow(row);
				this.logger.warn(`${name} ${row.id}: its job had disappeared from the queue; queued again`);
			},
			startReconciling(this: any) {
				const interval = Number(this.settings.reconcileInterval);
				if (!(interval > 0)) return;
				this.reconcileTimer = setInterval(() => {
					// Rows younger than one interval may still be between insert and enqueue.
					this.reconcile(Math.min(interval, 10_000)).catch((err: Error) => this.logger.warn(`${name}: reconcile failed: ${err.message}`));
				}, interval);
				this.reconcileTimer.unref();
			},
			async stopReconciling(this: any) {
				clearInterval(this.reconcileTimer);
				await Promise.allSettled([...(this.eventChains?.values() ?? [])]);
			},
		},
	};
}
