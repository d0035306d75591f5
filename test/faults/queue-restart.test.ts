import { startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { eventually } from "../support/ports";
import { startRedis } from "../support/servers";

describe("redis-server restarted with queued builds", () => {
	let redis: Awaited<ReturnType<typeof startRedis>>;
	let managers: TestProvisioner;
	let workers: TestProvisioner | undefined;
	beforeAll(async () => {
		redis = await startRedis();
		// Managers only: nothing consumes the queue until the workers start after the restart.
		managers = await startTestProvisioner({ services: ["gateway", "syslinuxs"], env: { REDIS_URL: redis.url } });
	});
	afterAll(async () => {
		await workers?.stop();
		await managers?.stop();
		await redis?.stop();
	});

	it("loses no queued job: every build completes once workers run", async () => {
		const fragments = ["ldlinux.c32", "isolinux.bin", "isohdpfx.bin"];
		const ids: number[] = [];
		for (const fragment of fragments) {
			const res = await managers.api("/syslinuxs", { method: "POST", json: { fragment } });
			expect(res.status).toBe(201);
			const row = await res.json();
			expect(row.status).toBe("queued");
			ids.push(row.id);
		}
		await redis.restart(1500);
		// The managers reconnect on their own; a new build is accepted again.
		await eventually(async () => (await managers.api("/syslinuxs")).status === 200, 30_000, "managers answer after the restart");
		workers = await startTestProvisioner({ services: ["syslinuxs-worker"], env: { REDIS_URL: redis.url, DATA_DIR: managers.dataDir } });
		for (const id of ids) {
			const row = await eventually(async () => {
				const current = await (await managers.api(`/syslinuxs/${id}`)).json();
				return current.status === "done" ? current : undefined;
			}, 60_000, `syslinux ${id} done`);
			expect(row).toMatchObject({ progress: 100, error: null, url: expect.stringContaining(`/syslinuxs/${id}/`) });
			expect((await (await fetch(row.url)).arrayBuffer()).byteLength).toBeGreaterThan(0);
		}
	});
});
