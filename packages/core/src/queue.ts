import path from "node:path";
import type { ServiceSchema } from "moleculer";
import { Queue, QueueEvents, Worker, type ConnectionOptions, type Job, type JobsOptions } from "bullmq";
import type { Config } from "./config";
import { configOf } from "./context";
import { defineMixin } from "./service-schema";

export type { Job } from "bullmq";

/** Where the private redis-server listens when REDIS_URL is not given. */
export function privateRedisSocket(dataDir: string): string {
	return path.join(dataDir, "redis", "redis.sock");
}

/** ioredis connection options for BullMQ from REDIS_URL (redis://, rediss://, unix:///path). */
export function redisConnection(config: Config): ConnectionOptions {
	// BullMQ workers block on Redis; they must retry forever rather than fail a command.
	const common = { maxRetriesPerRequest: null, enableReadyCheck: true };
	const url = config.redisUrl;
	if (!url) return { ...common, path: privateRedisSocket(config.dataDir) };
	if (url.startsWith("unix://")) return { ...common, path: url.slice("unix://".length) };
	const parsed = new URL(url);
	return {
		...common,
		host: parsed.hostname,
		port: Number(parsed.port || 6379),
		username: parsed.username || undefined,
		password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
		db: parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0,
		tls: parsed.protocol === "rediss:" ? {} : undefined,
	};
}

/** Jobs survive a worker crash: retried with backoff, kept briefly after they end. */
export const DEFAULT_JOB_OPTIONS: JobsOptions = {
	attempts: 3,
	backoff: { type: "exponential", delay: 2000 },
	removeOnComplete: { age: 24 * 3600, count: 1000 },
	removeOnFail: { age: 7 * 24 * 3600 },
};

/** What queueProducerMixin keeps on its service. */
export interface QueueProducerVars {
	queue: Queue;
	queueEvents: QueueEvents;
}

export interface QueueProducerMethods {
	enqueue(name: string, data: unknown, opts?: JobsOptions): Promise<Job>;
}

/** Job events a producer's service may follow: each gets the job id and the event's value. */
export interface JobEventHandlers {
	onJobActive?(jobId: string): unknown;
	onJobProgress?(jobId: string, progress: unknown): unknown;
	onJobCompleted?(jobId: string, returnvalue: unknown): unknown;
	onJobFailed?(jobId: string, failedReason: string): unknown;
}

/**
 * Producer side: `this.queue` to add jobs and `this.queueEvents` to follow them. The service may
 * define methods onJobActive/onJobProgress/onJobCompleted/onJobFailed(jobId, value).
 */
export function queueProducerMixin(queueName: string): Partial<ServiceSchema> {
	return defineMixin<QueueProducerMethods & JobEventHandlers, QueueProducerVars>({
		actions: {
			/** Jobs by state (waiting = queue depth), for the gateway's metrics; not a REST route. */
			queueCounts: {
				visibility: "public",
				handler(): Promise<Record<string, number>> {
					return this.queue.getJobCounts("waiting", "active", "delayed", "completed", "failed");
				},
			},
		},
		methods: {
			async enqueue(name: string, data: unknown, opts: JobsOptions = {}): Promise<Job> {
				return this.queue.add(name, data, { ...DEFAULT_JOB_OPTIONS, ...opts });
			},
		},
		async started() {
			const connection = redisConnection(configOf(this.broker));
			this.queue = new Queue(queueName, { connection });
			this.queueEvents = new QueueEvents(queueName, { connection });
			const follow = (event: string, jobId: string, apply: () => unknown) => {
				Promise.resolve(apply()).catch((err: Error) => this.logger.error(`${queueName}: ${event} handler failed for job ${jobId}:`, err.message));
			};
			if (this.onJobActive) this.queueEvents.on("active", ({ jobId }) => follow("active", jobId, () => this.onJobActive?.(jobId)));
			if (this.onJobProgress) this.queueEvents.on("progress", ({ jobId, data }) => follow("progress", jobId, () => this.onJobProgress?.(jobId, data)));
			if (this.onJobCompleted) this.queueEvents.on("completed", ({ jobId, returnvalue }) => follow("completed", jobId, () => this.onJobCompleted?.(jobId, returnvalue)));
			if (this.onJobFailed) this.queueEvents.on("failed", ({ jobId, failedReason }) => follow("failed", jobId, () => this.onJobFailed?.(jobId, failedReason)));
			await this.queue.waitUntilReady();
			await this.queueEvents.waitUntilReady();
		},
		async stopped() {
			await closeWithin(this.queueEvents);
			await closeWithin(this.queue);
		},
	});
}

/** How long a queue, its events or a worker may take to close before its connection is cut. */
const CLOSE_WITHIN_MS = 3000;

/**
 * Close a BullMQ object, or cut its connection: with Redis already gone, close() waits on
 * reconnects for ever, and a stop must end. A job cut short stalls and is retried elsewhere.
 */
async function closeWithin(closable: { close(): Promise<void>; disconnect(): Promise<void> } | undefined): Promise<void> {
	if (!closable) return;
	if ((await within(closable.close(), CLOSE_WITHIN_MS)) === "closed") return;
	// disconnect() first waits for a connection too: it gets a moment, then the process moves on.
	await within(closable.disconnect(), 1000);
}

/** "closed" when the promise settles within ms, else "gave up" (the promise is left to itself). */
async function within(promise: Promise<unknown>, ms: number): Promise<"closed" | "gave up"> {
	let timer: NodeJS.Timeout | undefined;
	const gaveUp = new Promise<"gave up">((resolve) => (timer = setTimeout(() => resolve("gave up"), ms)));
	const outcome = await Promise.race([promise.then(() => "closed" as const, () => "closed" as const), gaveUp]);
	clearTimeout(timer);
	return outcome;
}

/**
 * Consumer side: runs `this.processJob(job)` for each job, `concurrency` at a time. A worker that
 * dies mid-job leaves the job stalled; BullMQ hands it to another worker or retries it.
 */
export interface QueueWorkerMethods {
	processJob(job: Job): Promise<unknown>;
}

export function queueWorkerMixin(queueName: string, options: { concurrency?: number; lockDuration?: number } = {}): Partial<ServiceSchema> {
	return defineMixin<QueueWorkerMethods, { worker: Worker }>({
		async started() {
			const connection = redisConnection(configOf(this.broker));
			this.worker = new Worker(queueName, (job: Job) => this.processJob(job), {
				connection,
				concurrency: options.concurrency ?? 2,
				lockDuration: options.lockDuration ?? 30_000,
				stalledInterval: Math.min(options.lockDuration ?? 30_000, 15_000),
				maxStalledCount: 2,
			});
			this.worker.on("error", (err: Error) => this.logger.error(`${queueName} worker:`, err.message));
			await this.worker.waitUntilReady();
		},
		async stopped() {
			await closeWithin(this.worker);
		},
	});
}
