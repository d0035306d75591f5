import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { loadConfig } from "@clusterplatform/core";
import { startProvisioner } from "@clusterplatform/cli";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { startQemu, startRequestRecorder, type QemuRun, type RequestRecorder } from "@clusterplatform/test-kit/boot-qemu";

/**
 * /api/ipxes without a source tree (IPXE_SOURCE_DIR=none, an operator's choice; also what a machine
 * that could not get the source falls back to): Debian's prebuilt iPXE, which never carries the
 * script. ipxes-source.test.ts covers real builds.
 */
const PREBUILT = { IPXE_SOURCE_DIR: "none" };

const SEED_SCRIPT = (host: string) => `#!ipxe\ndhcp\nchain http://${host}/api/mainscripts/1`;

/** The seed tutorial's three iPXE builds, verbatim but for the host. */
const SEED_BUILDS = [
	{ platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi", debianFile: "ipxe.efi", delivery: /DHCP/ },
	{ platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "kpxe", debianFile: "undionly.kpxe", delivery: /DHCP/ },
	{ platform: "bin", driver: "ipxe", extension: "lkrn", debianFile: "ipxe.lkrn", delivery: /INITRD/ },
];

async function finished(provisioner: TestProvisioner, id: number, timeoutMs = 30_000) {
	return eventually(async () => {
		const row = await (await provisioner.api(`/ipxes/${id}`)).json();
		return row.status === "done" || row.status === "failed" ? row : undefined;
	}, timeoutMs, `ipxes ${id} finished`);
}

describe.each(DATABASES)("ipxes with Debian's prebuilt iPXE on %s", (database) => {
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: ["gateway", "ipxes", "ipxes-worker"], env: PREBUILT });
	});
	afterAll(() => provisioner?.stop());

	const rowCount = async () => (await (await provisioner.api("/ipxes")).json()).total;

	it("GET /api/ipxes/toolchain says the worker serves Debian's binaries, which embed nothing", async () => {
		const response = await provisioner.api("/ipxes/toolchain");
		expect(response.status).toBe(200);
		expect(await response.json()).toEqual({ workers: [{ nodeID: expect.any(String), mode: "prebuilt", embedded: false, source: "/usr/lib/ipxe", platforms: [] }] });
	});

	it.each(SEED_BUILDS)("seed example ($platform, $driver, $extension) is done with Debian's $debianFile, not embedded", async (build) => {
		const { debianFile, delivery, ...inputs } = build;
		const response = await provisioner.api("/ipxes", { method: "POST", json: { script: SEED_SCRIPT("services.example:30002"), ...inputs } });
		expect(response.status).toBe(201);
		const created = await response.json();
		expect(created).toMatchObject({ ...inputs, status: "queued" });
		const row = await finished(provisioner, created.id);
		expect(row).toMatchObject({ status: "done", progress: 100, error: null, embedded: false });
		expect(row.scriptDelivery).toMatch(/^not embedded/);
		expect(row.scriptDelivery).toMatch(delivery);
		expect(row.toolchain).toContain(`/usr/lib/ipxe/${debianFile}`);
		expect(row.url).toBe(`${provisioner.baseUrl}/api/artifacts/ipxes/${created.id}/${inputs.driver}.${inputs.extension}`);
		const artifact = await fetch(row.url);
		expect(artifact.status).toBe(200);
		expect(Buffer.from(await artifact.arrayBuffer()).equals(fs.readFileSync(path.join("/usr/lib/ipxe", debianFile)))).toBe(true);
	});

	it("answers identical inputs from the earlier artifact at once, still saying the script is not embedded", async () => {
		const inputs = { script: SEED_SCRIPT("cache.example:30002"), platform: "bin", driver: "ipxe", extension: "lkrn" };
		const first = await finished(provisioner, (await (await provisioner.api("/ipxes", { method: "POST", json: inputs })).json()).id);
		const again = await (await provisioner.api("/ipxes", { method: "POST", json: inputs })).json();
		expect(again.id).not.toBe(first.id);
		expect(again).toMatchObject({ status: "done", url: first.url, embedded: false, scriptDelivery: first.scriptDelivery });
	});

	it("says which targets need a source tree: the row fails at once with the reason", async () => {
		const before = Date.now();
		const response = await provisioner.api("/ipxes", { method: "POST", json: { script: "#!ipxe\nshell", platform: "bin-i386-efi", driver: "ipxe", extension: "efi" } });
		expect(response.status).toBe(201);
		const row = await finished(provisioner, (await response.json()).id);
		expect(row.status).toBe("failed");
		expect(row.error).toMatch(/bin-i386-efi\/ipxe\.efi is not available without IPXE_SOURCE_DIR/);
		// Not retried with backoff: a missing prebuilt file does not appear by waiting.
		expect(Date.now() - before).toBeLessThan(5_000);
	});

	const valid = { script: "#!ipxe\ndhcp", platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" };
	it.each([
		["platform", { platform: "bin-x86_64-efi; rm -rf /" }],
		["platform", { platform: "$(reboot)" }],
		["platform", { platform: "../../../etc" }],
		["platform", { platform: "bin-x86_64-efi\u0000" }],
		["platform", { platform: 64 }],
		["platform", { platform: undefined }],
		["driver", { driver: "ipxe EMBED=/etc/shadow" }],
		["driver", { driver: "`id`" }],
		["driver", { driver: "../ipxe" }],
		["driver", { driver: ["ipxe"] }],
		["driver", { driver: "e1000" }],
		["extension", { extension: "efi && reboot" }],
		["extension", { extension: "exe" }],
		["extension", { extension: null }],
		["extension", { extension: "lkrn" }],
		["extension", { platform: "bin", extension: "efi" }],
		["driver", { driver: "undionly" }],
		["driver", { platform: "bin-x86_64-pcbios", driver: "snponly", extension: "kpxe" }],
		["script", { script: "#!/bin/sh\nrm -rf /" }],
		["script", { script: "#!ipxe\necho \u0000 hidden" }],
		["script", { script: `#!ipxe\n${"echo x\n".repeat(20_000)}` }],
		["script", { script: { text: "#!ipxe" } }],
		["script", { script: "" }],
		["script", { script: undefined }],
		["embed", { embed: "/etc/shadow" }],
		["makeflags", { makeflags: "-j999" }],
	].map(([field, change]) => [field, JSON.stringify(change).slice(0, 60), change] as const))("refuses bad %s %s with a 422 naming it, and writes no row", async (field, _label, change) => {
		const before = await rowCount();
		const body = { ...valid, ...(change as object) };
		const response = await provisioner.api("/ipxes", { method: "POST", json: body });
		expect(response.status).toBe(422);
		const error = await response.json();
		expect(JSON.stringify(error.data ?? error)).toContain(field);
		expect(await rowCount()).toBe(before);
	});
});

describe("ipxes-worker start-up", () => {
	it("refuses to start when IPXE_SOURCE_DIR is not an iPXE checkout, saying so in one line", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-ipxe-start-"));
		try {
			await expect(startProvisioner(loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: "fatal", IPXE_SOURCE_DIR: "/nonexistent/ipxe" }), ["ipxes-worker"])).rejects.toThrow(
				"IPXE_SOURCE_DIR=/nonexistent/ipxe is not an iPXE source tree",
			);
		} finally {
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});

/**
 * The claim the lkrn row makes — "boot ipxe.lkrn with the script as its INITRD" — tried for real:
 * QEMU boots the downloaded artifact with a script that fetches a mainscript from this
 * provisioner, and the mainscript's own chain reaches a recorder on 127.0.0.1.
 */
describe("Debian's ipxe.lkrn runs a script given as INITRD (QEMU)", () => {
	let provisioner: TestProvisioner;
	let recorder: RequestRecorder;
	let guest: QemuRun | undefined;
	let scratch: string;
	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-ipxe-lkrn-"));
		recorder = await startRequestRecorder();
		provisioner = await startTestProvisioner({ services: ["gateway", "mainscripts", "ipxes", "ipxes-worker"], env: PREBUILT });
	});
	afterAll(async () => {
		await guest?.stop();
		await recorder?.stop();
		await provisioner?.stop();
		if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
	});

	it("iPXE → /api/mainscripts/N → the mainscript's chain arrives", async () => {
		const marker = `/from-mainscript-${randomBytes(6).toString("hex")}`;
		const gateway = `10.0.2.2:${new URL(provisioner.baseUrl).port}`;
		const mainscript = await (await provisioner.api("/mainscripts", { method: "POST", json: { text: `#!ipxe\nchain http://10.0.2.2:${recorder.port}${marker}` } })).json();
		const script = `#!ipxe\ndhcp\nchain http://${gateway}/api/mainscripts/${mainscript.id}`;
		const created = await (await provisioner.api("/ipxes", { method: "POST", json: { script, platform: "bin", driver: "ipxe", extension: "lkrn" } })).json();
		const row = await finished(provisioner, created.id);
		expect(row).toMatchObject({ status: "done", embedded: false });

		const kernel = path.join(scratch, "ipxe.lkrn");
		fs.writeFileSync(kernel, Buffer.from(await (await fetch(row.url)).arrayBuffer()));
		const initrd = path.join(scratch, "script.ipxe");
		fs.writeFileSync(initrd, script);
		guest = startQemu(scratch, ["-kernel", kernel, "-initrd", initrd, "-netdev", "user,id=n0", "-device", "e1000,netdev=n0"], 90_000);
		await expect(recorder.waitFor(new RegExp(`^${marker}$`), 90_000)).resolves.toBe(marker);
		await guest.stop();
	}, 120_000);
});
