import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Errors, type Service, type ServiceBroker, type ServiceSchema } from "moleculer";
import { UnrecoverableError, type Job } from "bullmq";
import type { Config } from "./config";
import { configOf } from "./context";
import { queueWorkerMixin } from "./queue";
import { processAlive } from "./redis";
import { defineMixin } from "./service-schema";

/**
 * The worker half of every job queue (builders, mirrors): each job runs in a private work dir that
 * is removed afterwards (and swept at the next start if the worker was killed), under a time limit
 * its signal reports, and a client error (4xx) it throws fails the job at once instead of being
 * retried. A worker never touches the database: what `run` returns goes back through BullMQ.
 */
export interface JobRun<Data> {
	job: Job<Data>;
	/** The job's row id, checked: it names the work dir. */
	id: number;
	workDir: string;
	/** Fires at the time limit. */
	signal: AbortSignal;
	config: Config;
	logger: Service["logger"];
	/** For calls to other services; never the database. */
	broker: ServiceBroker;
}

export interface JobWorkerOptions<Data, Result> {
	/** The queue; also names work dirs (`cpp-<queue>-<id>-p<pid>-…`). */
	queue: string;
	/** Jobs this process runs at once. */
	concurrency: number;
	/** BullMQ lock: a worker silent this long is presumed dead and its job retried. */
	lockDuration: number;
	/** Time limit of one attempt in ms. */
	timeoutMs: number;
	/** How a timeout reads: "build", "sync". */
	what: string;
	/** The row id a job is for; it may throw its own permanent failure, and anything but a positive integer fails the job. */
	idOf(job: Job<Data>): unknown;
	run(run: JobRun<Data>): Promise<Result>;
}

export function jobWorkerMixin<Data, Result>(options: JobWorkerOptions<Data, Result>): Partial<ServiceSchema> {
	return defineMixin<{ processJob(job: Job<Data>): Promise<Result> }>({
		mixins: [queueWorkerMixin(options.queue, { concurrency: options.concurrency, lockDuration: options.lockDuration })],
		async started() {
			const removed = await sweepStaleWorkDirs(options.queue);
			if (removed) this.logger.info(`${options.queue}: removed ${removed} work dir(s) of killed workers`);
		},
		methods: {
			async processJob(job: Job<Data>): Promise<Result> {
				const id = options.idOf(job);
				// Jobs come from a queue other code can write to: the id goes into a path only once checked.
				if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 1) {
					throw new UnrecoverableError(`id: must be a positive integer (a row's id), got ${(JSON.stringify(id) ?? String(id)).slice(0, 40)}`);
				}
				const workDir = await fsp.mkdtemp(path.join(os.tmpdir(), `cpp-${options.queue}-${id}-p${process.pid}-`));
				const controller = new AbortController();
				const timer = setTimeout(() => controller.abort(new Error(`${options.what} timed out after ${options.timeoutMs} ms`)), options.timeoutMs);
				try {
					return await options.run({ job, id, workDir, signal: controller.signal, config: configOf(this.broker), logger: this.logger, broker: this.broker });
				} catch (err) {
					if (err instanceof Errors.MoleculerClientError) throw new UnrecoverableError(err.message);
					if (controller.signal.aborted) throw new Error(String((controller.signal.reason as Error)?.message ?? `${options.what} aborted`));
					throw err;
				} finally {
					clearTimeout(timer);
					await fsp.rm(workDir, { recursive: true, force: true });
				}
			},
		},
	});
}

/**
 * Work dirs left by a worker that was killed (it could not clean up): `cpp-<queue>-<id>-p<pid>-…`
 * whose process is gone. Returns how many were removed.
 */
export async function sweepStaleWorkDirs(queue: string, root = os.tmpdir()): Promise<number> {
	const pattern = new RegExp(`^cpp-${queue.replace(/[^A-Za-z0-9_-]/g, "")}-\\d+-p(\\d+)-`);
	let removed = 0;
	for (const entry of await fsp.readdir(root).catch(() => [] as string[])) {
		const pid = Number(pattern.exec(entry)?.[1]);
		if (!pid || pid === process.pid || processAlive(pid)) continue;
		await fsp.rm(path.join(root, entry), { recursive: true, force: true });
		removed++;
	}
	return removed;
}
