import { Queue } from "bullmq";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freshPostgresDatabase, startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { eventually } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { startRedis, type TestServer } from "../support/servers";

/**
 * A builder worker is SIGKILLed in the middle of a job, in its own OS process (the built CLI:
 * `clusterplatform start grubs-worker`, as a Kubernetes pod would run it). With no worker alive,
 * the reconciler puts the interrupted job's row back to "queued" once the dead worker's lock has
 * expired; BullMQ's stalled-job handling hands the job to the next worker, and the row ends done.
 */
jest.setTimeout(180_000);

describe("a builder worker killed mid-job", () => {
	let redis: TestServer;
	let provisioner: TestProvisioner;
	let queue: Queue;
	const workers: ServiceProcess[] = [];

	beforeAll(async () => {
		redis = await startRedis();
		// The manager (and its database) lives here; the workers only share Redis and the artifact store.
		provisioner = await startTestProvisioner({ services: ["gateway", "grubs"], env: { REDIS_URL: redis.url } });
		queue = new Queue("grubs", { connection: { url: redis.url } as never });
	});

	afterAll(async () => {
		for (const worker of workers) await worker.stop();
		await queue?.close();
		await provisioner?.stop();
		await redis?.stop();
	});

	const startWorker = () => {
		const worker = startServiceProcess(["start", "grubs-worker"], { REDIS_URL: redis.url, DATA_DIR: provisioner.dataDir, NODE_ID: `killable-${workers.length}` });
		workers.push(worker);
		return worker;
	};

	it("is queued again by the reconciler, retried by another worker, and its row ends done, not working", async () => {
		const ids: number[] = [];
		for (let i = 0; i < 12; i++) {
			const response = await provisioner.api("/grubs", { method: "POST", json: { label: `KILL TEST ${i}`, architecture: "x64", fragment: "img" } });
			expect(response.status).toBe(201);
			ids.push((await response.json()).id);
		}
		const first = startWorker();
		// Kill it while it holds a job (an active job's lock belongs to exactly this worker).
		await eventually(async () => (await queue.getActiveCount()) > 0, 60_000, `the first worker took a job (output: ${first.output()})`);
		await first.kill();
		const active = await queue.getActive();
		const interrupted = active.map((job) => job.id!);
		expect(interrupted.length).toBeGreaterThan(0);
		const interruptedRows = active.map((job) => (job.data as { id: number }).id);
		const rowsNow = await Promise.all(ids.map(async (id) => (await provisioner.api(`/grubs/${id}`)).json()));
		console.log(`killed worker pid ${first.pid} mid-job; rows: ${rowsNow.map((r) => `${r.id}:${r.status}`).join(" ")}`);
		expect(rowsNow.some((r) => r.status !== "done")).toBe(true);

		// A killed process cannot clean up: its work dir stays until the next worker on this machine sweeps it.
		const leftovers = () => fs.readdirSync(os.tmpdir()).filter((entry) => new RegExp(`^cpp-grubs-\\d+-p${first.pid}-`).test(entry));
		expect(leftovers().length).toBeGreaterThan(0);
		const killedAt = Date.now();
		// An interrupted job's row says "working" (its active event reaches the manager)…
		const status = async (id: number): Promise<string> => (await (await provisioner.api(`/grubs/${id}`)).json()).status;
		for (const id of interruptedRows) await eventually(async () => (await status(id)) === "working", 30_000, `row ${id} of an interrupted job working`);
		// …and with no worker alive, the reconciler takes that back once the dead worker's lock has expired.
		const manager = provisioner.broker.getLocalService("grubs") as unknown as { reconcile(): Promise<void> };
		for (const id of interruptedRows) {
			await eventually(async () => {
				await manager.reconcile();
				return (await status(id)) === "queued";
			}, 30_000, `row ${id} back to queued once the dead worker's lock expired`);
			console.log(`row ${id}: queued again ${Date.now() - killedAt} ms after the kill (no worker holds it)`);
		}
		startWorker();
		const rows = await eventually(async () => {
			const all = await Promise.all(ids.map(async (id) => (await provisioner.api(`/grubs/${id}`)).json()));
			return all.every((r) => r.status === "done" || r.status === "failed") ? all : undefined;
		}, 120_000, "every row finished after the second worker started");
		console.log(`all ${rows.length} rows finished ${Date.now() - killedAt} ms after the kill`);
		expect(rows.filter((r) => r.status !== "done").map((r) => `${r.id}: ${r.status} ${r.error ?? ""}`)).toEqual([]);
		expect(leftovers()).toEqual([]);
		// The interrupted job really was taken over: BullMQ counted it as stalled, then it completed.
		for (const jobId of interrupted) {
			const job = await queue.getJob(jobId);
			expect(job?.stalledCounter ?? 0).toBeGreaterThanOrEqual(1);
			expect(await job?.getState()).toBe("completed");
		}
	});

	it("a job that finished while its manager was down is reconciled when the manager starts again", async () => {
		for (const worker of workers.splice(0)) await worker.stop();
		await provisioner.stop();
		const shared = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-reconcile-"));
		// A Redis of its own: the job is found by its row, whatever the previous test left in the queue.
		const ownRedis = await startRedis();
		const ownQueue = new Queue("grubs", { connection: { url: ownRedis.url } as never });
		const env = { REDIS_URL: ownRedis.url, DATABASE_URL: await freshPostgresDatabase(), DATA_DIR: shared };
		try {
			provisioner = await startTestProvisioner({ services: ["gateway", "grubs"], env });
			const created = await (await provisioner.api("/grubs", { method: "POST", json: { label: "RECONCILE", architecture: "x86", fragment: "efi" } })).json();
			expect(created.status).toBe("queued");
			await provisioner.stop();

			// No manager listens while the worker builds: the completed event is missed.
			const worker = startServiceProcess(["start", "grubs-worker"], { REDIS_URL: ownRedis.url, DATA_DIR: shared, NODE_ID: "reconcile-worker" });
			workers.push(worker);
			const completedForRow = async () => (await ownQueue.getJobs(["completed"])).some((job) => (job.data as { id: number }).id === created.id);
			await eventually(completedForRow, 60_000, `the job of grubs ${created.id} completed with no manager running`);

			provisioner = await startTestProvisioner({ services: ["gateway", "grubs"], env });
			const row = await (await provisioner.api(`/grubs/${created.id}`)).json();
			expect(row).toMatchObject({ status: "done", progress: 100 });
			expect((await (await fetch(row.url)).arrayBuffer()).byteLength).toBeGreaterThan(0);
		} finally {
			for (const worker of workers.splice(0)) await worker.stop();
			await ownQueue.close();
			await ownRedis.stop();
			fs.rmSync(shared, { recursive: true, force: true });
		}
	});
});
