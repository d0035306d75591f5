import fs from "node:fs";
import path from "node:path";
import { Queue } from "bullmq";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { startServiceProcess, type ServiceProcess } from "@clusterplatform/test-kit/processes";
import { startRedis, type TestServer } from "@clusterplatform/test-kit/servers";
import { GeneratedRepository, RepositoryServer } from "./fixture";
import os from "node:os";

/**
 * A mirrors-worker is SIGKILLed in its own OS process (the built CLI, as a pod runs it) in the
 * middle of a mirror. BullMQ hands the stalled job to the next worker, which resumes from the
 * manifest the dead one left in the store: only files not yet stored and verified move again.
 */
jest.setTimeout(180_000);

const PACKAGES = 16;

describe("a mirrors-worker killed mid-mirror", () => {
	let redis: TestServer;
	let provisioner: TestProvisioner;
	let server: RepositoryServer;
	let queue: Queue;
	let work: string;
	const workers: ServiceProcess[] = [];

	beforeAll(async () => {
		work = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-mirror-resume-"));
		const repo = new GeneratedRepository(path.join(work, "repo"));
		for (let i = 0; i < PACKAGES; i++) await repo.addPackage(`pkg${String(i).padStart(2, "0")}`, "1.0", 8 * 1024);
		await repo.index();
		server = await RepositoryServer.start(repo.dir);
		redis = await startRedis();
		// The manager and its database live here; the workers only share Redis and the artifact store (the data dir).
		provisioner = await startTestProvisioner({ services: ["gateway", "mirrors"], env: { REDIS_URL: redis.url, MIRROR_ALLOWED_HOSTS: "127.0.0.1" } });
		queue = new Queue("mirrors", { connection: { url: redis.url } as never });
	});

	afterAll(async () => {
		for (const worker of workers) await worker.stop();
		await queue?.close();
		await provisioner?.stop();
		await redis?.stop();
		await server?.stop();
		fs.rmSync(work, { recursive: true, force: true });
	});

	const startWorker = () => {
		const worker = startServiceProcess(["start", "mirrors-worker"], {
			REDIS_URL: redis.url,
			DATA_DIR: provisioner.dataDir,
			MIRROR_ALLOWED_HOSTS: "127.0.0.1",
			NODE_ID: `mirror-worker-${workers.length}`,
		});
		workers.push(worker);
		return worker;
	};

	const storedPackages = (id: number): string[] => {
		const file = path.join(provisioner.dataDir, "artifacts", "mirrors", String(id), "manifest.json");
		if (!fs.existsSync(file)) return [];
		return Object.keys(JSON.parse(fs.readFileSync(file, "utf8")).files).filter((f) => f.startsWith("Packages/"));
	};

	it("resumes from the manifest: only the remaining files move", async () => {
		server.packageDelayMs = 1000;
		const created = await (await provisioner.api("/mirrors", { method: "POST", json: { name: "resumable", source: server.baseUrl } })).json();
		const first = startWorker();
		await eventually(() => storedPackages(created.id).length >= 4, 60_000, `the first worker stored some packages (output: ${first.output()})`);
		const progressing = await (await provisioner.api(`/mirrors/${created.id}`)).json();
		expect(progressing.status).toBe("working");
		expect(progressing.progress).toBeGreaterThan(0);
		expect(progressing.progress).toBeLessThan(100);
		await first.kill();
		const killedAt = Date.now();
		const kept = storedPackages(created.id);
		const requestedBefore = server.packageRequests();
		console.log(`killed worker pid ${first.pid}: ${kept.length} of ${PACKAGES} packages stored and in the manifest, ${requestedBefore.length} requested; row at ${progressing.progress}%`);
		expect(kept.length).toBeLessThan(PACKAGES);
		expect((await anonymousStatus(`${provisioner.baseUrl}/api/artifacts/mirrors/${created.id}/repo/repodata/repomd.xml`))).toBe(404);

		server.reset();
		server.packageDelayMs = 0;
		startWorker();
		const row = await eventually(async () => {
			const now = await (await provisioner.api(`/mirrors/${created.id}`)).json();
			return now.status === "done" || now.status === "failed" ? now : undefined;
		}, 120_000, "the mirror finished after the second worker started");
		console.log(`mirror done ${Date.now() - killedAt} ms after the kill (BullMQ's stalled-job check waits for the dead worker's lock to expire)`);
		expect(row).toMatchObject({ status: "done", progress: 100 });
		const all = Array.from({ length: PACKAGES }, (_, i) => `Packages/pkg${String(i).padStart(2, "0")}-1.0-1.noarch.rpm`);
		// Exactly the packages the manifest did not hold were fetched again; the metadata stored before the kill was not.
		expect(server.packageRequests().sort()).toEqual(all.filter((p) => !kept.includes(p)).sort());
		expect(server.requests.filter((r) => r.startsWith("repodata/") && r !== "repodata/repomd.xml")).toEqual([]);
		expect(row.lastUnchanged).toBeGreaterThanOrEqual(kept.length);
		expect(row.lastTransferred).toBe(row.filesTotal - row.lastUnchanged);
		const job = (await queue.getCompleted()).find((j) => j.data.id === created.id);
		expect(job?.stalledCounter ?? 0).toBeGreaterThanOrEqual(1);
	});
});

async function anonymousStatus(url: string): Promise<number> {
	return (await fetch(url)).status;
}
