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
 * `clusterplatform start grubs-worker`, as a Kubernetes pod would run it). BullMQ's stalled-job
 * handling hands the job to the next worker; the manager's row ends done (or failed with a
 * reason), never "working" forever.
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

	it("is retried by another worker and its row ends done, not working", async () => {
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
		const interrupted = (await queue.getActive()).map((job) => job.id!);
		expect(interrupted.length).toBeGreaterThan(0);
		const rowsNow = await Promise.all(ids.map(async (id) => (await provisioner.api(`/grubs/${id}`)).json()));
		console.log(`killed worker pid ${first.pid} mid-job; rows: ${rowsNow.map((r) => `${r.id}:${r.status}`).join(" ")}`);
		expect(rowsNow.some((r) => r.status !== "done")).toBe(true);

		// A killed process cannot clean up: its work dir stays until the next worker on this machine sweeps it.
		const leftovers = () => fs.readdirSync(os.tmpdir()).filter((entry) => new RegExp(`^cpp-grubs-\\d+-p${first.pid}-`).test(entry));
		expect(leftovers().length).toBeGreaterThan(0);
		const killedAt = Date.now();
		// With no worker alive, the row does not claim "working" once the dead worker's lock has expired.
		const manager = provisioner.broker.getLocalService("grubs") as unknown as { reconcile(): Promise<void> };
		const stuck = rowsNow.find((r) => r.status === "working");
		if (stuck) {
			await eventually(async () => {
				await manager.reconcile();
				return (await (await provisioner.api(`/grubs/${stuck.id}`)).json()).status === "queued";
			}, 30_000, `row ${stuck.id} back to queued once the dead worker's lock expired`);
			console.log(`row ${stuck.id}: queued again ${Date.now() - killedAt} ms after the kill (no worker holds it)`);
		}
		startWorker();
		const rows = await eventually(async () => {
			const all = await Promise.all(ids.map(async (id) => (await provisioner.api(`/grubs/${id}`)).json()));
			return all.every((r) => r.status === "done" || r.status === "failed") ? all : undefined;
		}, 120_000, "every row finished after the second worker started");
		console.log(`all ${rows.length} rows finished ${Date.now() - killedAt} ms after the kill`);
		for (const row of rows) {
			expect(["done", "failed"]).toContain(row.status);
			if (row.status === "failed") expect(row.error).toBeTruthy();
		}
		expect(rows.filter((r) => r.status === "done").length).toBe(rows.length);
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
		const env = { REDIS_URL: redis.url, DATABASE_URL: await freshPostgresDatabase(), DATA_DIR: shared };
		try {
			provisioner = await startTestProvisioner({ services: ["gateway", "grubs"], env });
			const created = await (await provisioner.api("/grubs", { method: "POST", json: { label: "RECONCILE", architecture: "x86", fragment: "efi" } })).json();
			expect(created.status).toBe("queued");
			await provisioner.stop();

			// No manager listens while the worker builds: the completed event is missed.
			const worker = startServiceProcess(["start", "grubs-worker"], { REDIS_URL: redis.url, DATA_DIR: shared, NODE_ID: "reconcile-worker" });
			workers.push(worker);
			await eventually(async () => (await queue.getCompletedCount()) >= 13, 60_000, "the job completed with no manager running");

			provisioner = await startTestProvisioner({ services: ["gateway", "grubs"], env });
			const row = await (await provisioner.api(`/grubs/${created.id}`)).json();
			expect(row).toMatchObject({ status: "done", progress: 100 });
			expect((await (await fetch(row.url)).arrayBuffer()).byteLength).toBeGreaterThan(0);
		} finally {
			fs.rmSync(shared, { recursive: true, force: true });
		}
	});
});
