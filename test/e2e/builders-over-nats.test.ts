import { storeFor } from "@clusterplatform/core";
import { eventually, freePort } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { startNats, startRedis, type TestServer } from "../support/servers";

/**
 * Distributed wiring: the managers (and the database) in this process, the builder workers in
 * another OS process, joined by NATS and Redis only. The ISO worker resolves parts given by id
 * by calling the grubs/syslinuxs managers over NATS; the workers never open the database (their
 * DATABASE_URL points nowhere).
 */
jest.setTimeout(180_000);

describe("builders over NATS: managers here, workers in another process", () => {
	let nats: TestServer;
	let redis: TestServer;
	let provisioner: TestProvisioner;
	let workers: ServiceProcess;

	beforeAll(async () => {
		[nats, redis] = await Promise.all([startNats(), startRedis()]);
		const env = { TRANSPORTER: nats.url, REDIS_URL: redis.url };
		provisioner = await startTestProvisioner({ services: ["gateway", "grubs", "syslinuxs", "isos"], env });
		const unusedPort = await freePort();
		workers = startServiceProcess(["start", "grubs-worker", "syslinuxs-worker", "isos-worker"], {
			...env,
			// Same artifact store and public URL as the managers (one machine here; S3 when spread out).
			DATA_DIR: provisioner.dataDir,
			PUBLIC_URL: provisioner.baseUrl,
			DATABASE_URL: `postgres://nobody@127.0.0.1:${unusedPort}/none`,
			NODE_ID: `workers-${process.pid}`,
		});
	});

	afterAll(async () => {
		await workers?.stop();
		await provisioner?.stop();
		await redis?.stop();
		await nats?.stop();
	});

	async function build(entity: string, body: Record<string, unknown>) {
		const response = await provisioner.api(`/${entity}`, { method: "POST", json: body });
		const created = await response.json();
		expect(response.status).toBe(201);
		return eventually(async () => {
			const row = await (await provisioner.api(`/${entity}/${created.id}`)).json();
			return ["done", "failed"].includes(row.status) ? row : undefined;
		}, 90_000, `${entity} ${created.id} finished (workers: ${workers.output().slice(-500)})`);
	}

	it("builds GRUB and SYSLINUX parts and an ISO from them by id", async () => {
		const label = "NATS ISO";
		const [grubImg, ldLinux, isolinuxBin, isohdpfxBin] = await Promise.all([
			build("grubs", { label, architecture: "x64", fragment: "img" }),
			build("syslinuxs", { fragment: "ldlinux.c32" }),
			build("syslinuxs", { fragment: "isolinux.bin" }),
			build("syslinuxs", { fragment: "isohdpfx.bin" }),
		]);
		for (const part of [grubImg, ldLinux, isolinuxBin, isohdpfxBin]) expect(part).toMatchObject({ status: "done", error: null });
		const store = storeFor(provisioner.config);
		const iso = await build("isos", {
			label,
			ipxeBiosUrl: (await store.putFile("test-parts/ipxe.lkrn", "/usr/lib/ipxe/ipxe.lkrn")).url,
			ipxeUefiUrl: (await store.putFile("test-parts/ipxe.efi", "/usr/lib/ipxe/ipxe.efi")).url,
			grubImgId: grubImg.id,
			ldLinuxId: ldLinux.id,
			isolinuxBinId: isolinuxBin.id,
			isohdpfxBinId: isohdpfxBin.id,
		});
		expect(iso).toMatchObject({ status: "done", progress: 100, error: null });
		const download = await fetch(iso.url);
		expect(download.status).toBe(200);
		const head = Buffer.from(await download.arrayBuffer()).subarray(0x8000, 0x8000 + 0x48);
		expect(head.subarray(1, 6).toString("latin1")).toBe("CD001");
		expect(head.subarray(0x28, 0x28 + label.length).toString("latin1")).toBe(label);
	});
});
