import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Queue } from "bullmq";
import { loadConfig, redisConnection, startPrivateRedis } from "@clusterplatform/core";

describe("private redis-server", () => {
	let dataDir: string;
	beforeEach(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-redis-"));
	});
	afterEach(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	const processAlive = (pid: number) => {
		try {
			process.kill(pid, 0);
			return true;
		} catch {
			return false;
		}
	};

	it("listens on a unix socket in the data dir, keeps queued jobs across a restart, and stops", async () => {
		const config = loadConfig({ DATA_DIR: dataDir });
		let redis = await startPrivateRedis(dataDir);
		expect(fs.statSync(redis.socket).isSocket()).toBe(true);
		let queue = new Queue("persistence-check", { connection: redisConnection(config) });
		await queue.add("job", { n: 1 });
		await queue.close();
		await redis.stop();
		expect(processAlive(redis.pid)).toBe(false);

		redis = await startPrivateRedis(dataDir);
		queue = new Queue("persistence-check", { connection: redisConnection(config) });
		try {
			expect(await queue.getWaitingCount()).toBe(1);
		} finally {
			await queue.close();
			await redis.stop();
		}
	});

	it("refuses to start a second one on the same data dir", async () => {
		const redis = await startPrivateRedis(dataDir);
		try {
			await expect(startPrivateRedis(dataDir)).rejects.toThrow(/already listens/);
		} finally {
			await redis.stop();
		}
	});
});
