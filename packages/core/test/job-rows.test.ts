import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { Queue, Worker, type Job } from "bullmq";
import {
	DataTypes,
	JOB_ROW_FIELDS,
	createBroker,
	defineService,
	entityMixin,
	jobRowsMixin,
	loadConfig,
	queueProducerMixin,
	redisConnection,
	type EntityMethods,
	type EntityVars,
	type JobRowColumns,
	type JobRowValues,
	type JobRowsMethods,
	type JobRowsVars,
	type QueueProducerMethods,
} from "@clusterplatform/core";
import { eventually } from "@clusterplatform/test-kit/ports";
import { startRedis, type TestServer } from "@clusterplatform/test-kit/servers";
import { scratchDir } from "@clusterplatform/test-kit/scratch";

/**
 * jobRowsMixin on an in-process broker with BullMQ on a real redis-server and SQLite: a host of the
 * test's own (rows with a `note` the outcome fills in) and a BullMQ worker the test holds at gates,
 * so each job event can be seen reaching its row — and a row whose events were missed is mended.
 */
const QUEUE = "jobrowtests";

type NoteColumns = JobRowColumns & { note: string | null };
type Host = JobRowsMethods & EntityMethods<NoteColumns> & JobRowsVars & QueueProducerMethods;

/** What the test's worker does with a job (by its data's `mode`). */
type Mode = "gated" | "fail" | "quick";

const gates = new Map<string, () => void>();
let closing = false;
function gate(name: string): Promise<void> {
	if (closing) return Promise.resolve();
	return new Promise((resolve) => gates.set(name, resolve));
}
async function open(name: string): Promise<void> {
	await eventually(() => gates.has(name), 30_000, `the job reached gate ${name}`);
	gates.get(name)!();
	gates.delete(name);
}

async function work(job: Job<{ id: number; mode: Mode; word: string }>): Promise<{ note: string }> {
	const { mode, word } = job.data;
	if (mode === "fail") throw new Error(`cannot do ${word}`);
	if (mode === "gated") {
		await job.updateProgress(40);
		await gate(`${word}-40`);
		// Not a number: the default progressChanges ignores it, the row keeps 40.
		await job.updateProgress({ percent: "nonsense" });
		await job.updateProgress(250);
		await gate(`${word}-100`);
	}
	return { note: `did ${word}` };
}

describe("jobRowsMixin on an in-process broker", () => {
	let redis: TestServer;
	let broker: ServiceBroker;
	let dataDir: string;
	let worker: Worker | undefined;
	let queue: Queue | undefined;
	const requeued: number[] = [];

	beforeAll(async () => {
		redis = await startRedis();
		dataDir = scratchDir("cpp-job-rows-");
		const config = loadConfig({ DATA_DIR: dataDir, REDIS_URL: redis.url, LOG_LEVEL: "fatal" });
		broker = createBroker(config, { logger: false });
		broker.createService(
			defineService<JobRowsMethods & EntityMethods<NoteColumns> & QueueProducerMethods, EntityVars<NoteColumns>>({
				name: QUEUE,
				mixins: [
					entityMixin({ name: QUEUE, fields: { ...JOB_ROW_FIELDS, note: { type: DataTypes.STRING(64), allowNull: true } }, params: {} }),
					queueProducerMixin(QUEUE),
					jobRowsMixin(QUEUE),
				],
				// Reconciled only when the test says so.
				settings: { reconcileInterval: 0 },
				methods: {
					async applyCompleted(jobId: string, outcome: { note: string }) {
						await this.updateUnfinished(jobId, { status: "done", progress: 100, error: null, note: outcome.note });
					},
					async requeueRow(row: JobRowValues) {
						requeued.push(row.id);
						const jobId = randomUUID();
						await this.adapter.model.update({ jobId, status: "queued", progress: 0 }, { where: { id: row.id } });
						await this.enqueue(QUEUE, { id: row.id, mode: "quick", word: `again-${row.id}` }, { jobId });
					},
				},
			}),
		);
		await broker.start();
		worker = new Worker(QUEUE, work, { connection: redisConnection(config), concurrency: 4 });
		await worker.waitUntilReady();
		queue = new Queue(QUEUE, { connection: redisConnection(config) });
	});

	afterAll(async () => {
		closing = true;
		for (const release of gates.values()) release();
		await worker?.close();
		await queue?.close();
		await broker?.stop();
		await redis?.stop();
	});

	const host = () => broker.getLocalService(QUEUE) as unknown as Host;
	/** Resolves once the host's queue events have delivered `event` for `jobId`. */
	const eventPassed = (event: "completed" | "failed", jobId: string) =>
		new Promise<void>((resolve) => {
			const seen = (args: { jobId: string }) => {
				if (args.jobId !== jobId) return;
				host().queueEvents.off(event, seen);
				resolve();
			};
			host().queueEvents.on(event, seen);
		});
	const row = async (id: number) => (await host().adapter.findById(id))!.get();

	/** A queued row and its job, as a manager makes them. */
	async function queued(mode: Mode, word: string, attempts = 1): Promise<number> {
		const jobId = randomUUID();
		const created = await host().adapter.insert({ status: "queued", progress: 0, jobId });
		await host().enqueueJob({ id: created.id, mode, word }, jobId, { attempts });
		return created.id;
	}

	it("follows its job: working with its progress while it runs (clamped, nonsense ignored), then done with the outcome", async () => {
		const id = await queued("gated", "alpha");
		await eventually(async () => (await row(id)).progress === 40, 30_000, "progress 40 on the row");
		expect(await row(id)).toMatchObject({ status: "working", progress: 40, note: null });
		await open("alpha-40");
		await eventually(async () => (await row(id)).progress === 100, 30_000, "progress 250 clamped to 100 on the row");
		expect((await row(id)).status).toBe("working");
		await open("alpha-100");
		await eventually(async () => (await row(id)).status === "done", 30_000, "row done");
		expect(await row(id)).toMatchObject({ status: "done", progress: 100, error: null, note: "did alpha" });
	});

	it("fails its row with the job's reason", async () => {
		const id = await queued("fail", "beta");
		await eventually(async () => (await row(id)).status === "failed", 30_000, "row failed");
		expect(await row(id)).toMatchObject({ status: "failed", error: "cannot do beta", note: null });
	});

	it("keeps a finished row final: a late event of its job changes nothing", async () => {
		const id = await queued("quick", "gamma");
		await eventually(async () => (await row(id)).status === "done", 30_000, "row done");
		const { jobId } = await row(id);
		await host().onJobFailed(jobId!, "a late failure");
		await host().onJobActive(jobId!);
		expect(await row(id)).toMatchObject({ status: "done", error: null, note: "did gamma" });
	});

	it("reconciles rows whose events were missed: a finished job's outcome, a failed one's reason, a vanished job queued again", async () => {
		// Jobs that ran while no row listened for them (the manager was down when their events went by).
		const [finishedId, failedId] = [randomUUID(), randomUUID()];
		// Their events reach the host before the rows exist (it applies them to no row), however late the stream delivers them.
		const passed = Promise.all([eventPassed("completed", finishedId), eventPassed("failed", failedId)]);
		const finished = await queue!.add(QUEUE, { id: 0, mode: "quick", word: "delta" }, { jobId: finishedId });
		const failed = await queue!.add(QUEUE, { id: 0, mode: "fail", word: "epsilon" }, { jobId: failedId, attempts: 1 });
		await eventually(async () => (await finished.getState()) === "completed" && (await failed.getState()) === "failed", 30_000, "both jobs over");
		await passed;
		await host().jobEvents.settled();
		const stuck = await host().adapter.insert({ status: "working", progress: 30, jobId: finished.id });
		const stuckFailing = await host().adapter.insert({ status: "working", progress: 30, jobId: failed.id });
		const orphan = await host().adapter.insert({ status: "queued", progress: 0, jobId: `vanished-${randomUUID()}` });
		expect((await row(stuck.id)).status).toBe("working");

		await host().reconcile();

		expect(await row(stuck.id)).toMatchObject({ status: "done", progress: 100, note: "did delta" });
		expect(await row(stuckFailing.id)).toMatchObject({ status: "failed", error: "cannot do epsilon" });
		expect(requeued).toEqual([orphan.id]);
		// Queued again under a new job, which then runs and reaches the row through its events.
		await eventually(async () => (await row(orphan.id)).status === "done", 30_000, "the requeued row done");
		expect(await row(orphan.id)).toMatchObject({ note: `did again-${orphan.id}` });
		expect((await row(orphan.id)).jobId).not.toMatch(/^vanished-/);
	});
});
