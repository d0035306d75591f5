import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { Queue } from "bullmq";
import { loadConfig, redisConnection } from "@clusterplatform/core";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { startRedis, type TestServer } from "@clusterplatform/test-kit/servers";

/**
 * Issue 13, finding 13: a purge job's id went to a recursive delete unchecked, so whoever could
 * write to Redis could delete any path the worker can. Jobs are written straight into BullMQ here,
 * as such a writer would; Redis requires a password, given in REDIS_URL as the manifests do.
 */
jest.setTimeout(60_000);

const PASSWORD = "redis p@ss:w/rd%";

/** What Redis answers a client without the password (a raw RESP PING, bounded). */
function pingWithoutPassword(port: number): Promise<string> {
	return new Promise((resolve, reject) => {
		const socket = net.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
		socket.setTimeout(5000, () => socket.destroy(new Error("no answer from Redis")));
		socket.once("data", (data) => {
			socket.end();
			resolve(data.toString().trim());
		});
		socket.once("error", reject);
	});
}

describe("mirrors-worker purge jobs", () => {
	let redis: TestServer;
	let provisioner: TestProvisioner;
	let queue: Queue;
	let stagingRoot: string;
	let outside: string;
	let sibling: string;
	let legit: string;

	beforeAll(async () => {
		redis = await startRedis({ password: PASSWORD });
		provisioner = await startTestProvisioner({ services: ["mirrors-worker"], env: { REDIS_URL: redis.url } });
		queue = new Queue("mirrors", { connection: redisConnection(loadConfig({ REDIS_URL: redis.url })) });
		stagingRoot = path.join(provisioner.dataDir, "mirror-staging");
		// What a hostile id would reach: a directory beside the data dir, one inside it, and a real mirror's staging tree.
		outside = fs.mkdtempSync(path.join(path.dirname(provisioner.dataDir), "cpp-purge-victim-"));
		sibling = path.join(provisioner.dataDir, "victim");
		legit = path.join(stagingRoot, "7");
		for (const dir of [outside, sibling, path.join(legit, "tree")]) {
			fs.mkdirSync(dir, { recursive: true });
			fs.writeFileSync(path.join(dir, "keep"), "must survive\n");
		}
	});
	afterAll(async () => {
		await queue?.close();
		await provisioner?.stop();
		await redis?.stop();
		if (outside) fs.rmSync(outside, { recursive: true, force: true });
	});

	const finished = async (name: string, data: unknown) => {
		// attempts: 3, as a writer could ask: a refused id fails at once, it is not retried.
		const job = await queue.add(name, data, { attempts: 3, backoff: { type: "fixed", delay: 100 } });
		return eventually(async () => {
			const state = await queue.getJobState(job.id!);
			if (state !== "failed" && state !== "completed") return undefined;
			// Read after the state: the job's fields are final once it is failed or completed.
			const done = (await queue.getJob(job.id!))!;
			return { state, reason: done.failedReason, attempts: done.attemptsMade };
		}, 20_000, `job ${job.id} finished`);
	};

	it("Redis refuses a client without the password; the worker and this test connect with redis://:password@host", async () => {
		expect(await pingWithoutPassword(redis.port)).toMatch(/^-NOAUTH/);
		expect(redis.url).toMatch(/^redis:\/\/:[^@]+@127\.0\.0\.1:\d+$/);
		expect(await queue.getJobCounts("failed")).toEqual({ failed: 0 });
	});

	it.each([
		["../../<outside>", () => `../../${path.basename(outside)}`],
		["../victim", () => "../victim"],
		["1/../../victim", () => "1/../../victim"],
		["7/../../victim", () => "7/../../victim"],
		["/ (absolute)", () => outside],
		[". (the staging root)", () => "."],
		[".. (the data dir)", () => ".."],
		["'7' (a string)", () => "7"],
		["-1", () => -1],
		["0", () => 0],
		["1.5", () => 1.5],
		["1e21", () => 1e21],
		["null", () => null],
		["an object", () => ({ toString: "x" })],
		["an array", () => [7]],
	])("fails a purge with the id %s clearly, deleting nothing", async (_label, id) => {
		const outcome = await finished("purge", { id: id(), source: "" });
		expect(outcome.state).toBe("failed");
		expect(outcome.attempts).toBeLessThan(2);
		expect(outcome.reason).toMatch(/^id: must be a positive integer \(a mirror's id\), got /);
		for (const dir of [outside, sibling, path.join(legit, "tree")]) expect(fs.readFileSync(path.join(dir, "keep"), "utf8")).toBe("must survive\n");
	});

	it("fails a sync job with a hostile id before it names any directory", async () => {
		const outcome = await finished("sync", { id: "../victim", source: "rsync://mirror.example.org/fedora/" });
		expect(outcome.state).toBe("failed");
		expect(outcome.attempts).toBeLessThan(2);
		expect(outcome.reason).toMatch(/^id: must be a positive integer/);
		expect(fs.existsSync(path.join(sibling, "keep"))).toBe(true);
	});

	it("a purge with a mirror's id removes exactly that mirror's staging tree", async () => {
		const outcome = await finished("purge", { id: 7, source: "" });
		expect(outcome.state).toBe("completed");
		expect(fs.existsSync(legit)).toBe(false);
		expect(fs.existsSync(stagingRoot)).toBe(true);
		expect(fs.existsSync(path.join(sibling, "keep"))).toBe(true);
		expect(fs.existsSync(path.join(outside, "keep"))).toBe(true);
	});
});
