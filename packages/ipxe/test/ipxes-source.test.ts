import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { ipxeSource } from "@clusterplatform/test-kit/ipxe-source";
import { describeIf } from "@clusterplatform/test-kit/requirements";
import { startQemu, startRequestRecorder, type QemuRun, type RequestRecorder } from "@clusterplatform/test-kit/boot-qemu";

/**
 * Real builds from the iPXE source (the tree scripts/setup installs, or IPXE_SOURCE_DIR), proven
 * by booting them: the embedded script's HTTP request must arrive. Setup prepares each platform's
 * object tree; on a machine where it did not, the first build per platform prepares it (about a
 * minute on a free core).
 */

const BUILD_TIMEOUT_MS = 12 * 60 * 1000;
const BOOT_TIMEOUT_MS = 120_000;

describeIf(ipxeSource().reason, "ipxes built from the iPXE source tree", () => {
	let provisioner: TestProvisioner;
	let recorder: RequestRecorder;
	const guests: QemuRun[] = [];
	let scratch: string;

	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-ipxe-source-"));
		recorder = await startRequestRecorder();
		provisioner = await startTestProvisioner({ services: ["gateway", "ipxes", "ipxes-worker"] });
	});
	afterAll(async () => {
		await Promise.all(guests.map((guest) => guest.stop()));
		await recorder?.stop();
		await provisioner?.stop();
		if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
	});

	/** A script whose only visible effect is one HTTP request for a fresh marker path. */
	function markedScript(label: string): { script: string; marker: string } {
		const marker = `/embedded-${label}-${randomBytes(6).toString("hex")}`;
		return { marker, script: `#!ipxe\ndhcp\nchain http://10.0.2.2:${recorder.port}${marker}\n` };
	}

	/** POST, then poll until done/failed, remembering every progress value seen on the way. */
	async function build(inputs: Record<string, string>) {
		const response = await provisioner.api("/ipxes", { method: "POST", json: inputs });
		expect(response.status).toBe(201);
		const { id } = await response.json();
		const seen = new Set<number>();
		const row = await eventually(async () => {
			const current = await (await provisioner.api(`/ipxes/${id}`)).json();
			if (current.status === "working") seen.add(current.progress);
			return current.status === "done" || current.status === "failed" ? current : undefined;
		}, BUILD_TIMEOUT_MS, `ipxes ${id} finished`);
		return { row, progressSeen: [...seen] };
	}

	async function download(url: string, name: string): Promise<string> {
		const response = await fetch(url);
		expect(response.status).toBe(200);
		const file = path.join(scratch, name);
		fs.writeFileSync(file, Buffer.from(await response.arrayBuffer()));
		return file;
	}

	/** BIOS: QEMU loads the lkrn as a Linux kernel; no initrd, so any script it runs is embedded. */
	function bootLkrn(kernel: string): QemuRun {
		const guest = startQemu(scratch, ["-kernel", kernel, "-netdev", "user,id=n0", "-device", "e1000,netdev=n0"], BOOT_TIMEOUT_MS);
		guests.push(guest);
		return guest;
	}

	/** UEFI: OVMF starts EFI/BOOT/BOOTX64.EFI from a FAT drive; the NIC has no option ROM, iPXE drives it. */
	function bootEfi(efi: string): QemuRun {
		const esp = fs.mkdtempSync(path.join(scratch, "esp-"));
		fs.mkdirSync(path.join(esp, "EFI", "BOOT"), { recursive: true });
		fs.copyFileSync(efi, path.join(esp, "EFI", "BOOT", "BOOTX64.EFI"));
		const guest = startQemu(scratch, [
			"-bios", "/usr/share/ovmf/OVMF.fd",
			"-drive", `file=fat:${esp},format=raw,if=none,id=esp,readonly=on`,
			"-device", "virtio-blk-pci,drive=esp,bootindex=1",
			"-netdev", "user,id=n0",
			"-device", "e1000,netdev=n0,romfile=",
		], BOOT_TIMEOUT_MS);
		guests.push(guest);
		return guest;
	}

	it("bin-x86_64-pcbios/ipxe.lkrn: built with the script embedded, reporting progress; QEMU runs the script", async () => {
		const { script, marker } = markedScript("lkrn");
		const { row, progressSeen } = await build({ script, platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "lkrn" });
		expect(row).toMatchObject({ status: "done", progress: 100, error: null, embedded: true });
		expect(row.scriptDelivery).toMatch(/^embedded/);
		expect(row.toolchain).toMatch(/iPXE source tree/);
		expect(progressSeen.some((p) => p > 0 && p < 100)).toBe(true);
		const guest = bootLkrn(await download(row.url, "embedded.lkrn"));
		await recorder.waitFor(new RegExp(`^${marker}$`), BOOT_TIMEOUT_MS);
		await guest.stop();
	}, BUILD_TIMEOUT_MS + BOOT_TIMEOUT_MS);

	it("bin-x86_64-efi/ipxe.efi: built with the script embedded; OVMF runs it", async () => {
		const { script, marker } = markedScript("efi");
		const { row } = await build({ script, platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" });
		expect(row).toMatchObject({ status: "done", error: null, embedded: true });
		const guest = bootEfi(await download(row.url, "embedded.efi"));
		await recorder.waitFor(new RegExp(`^${marker}$`), BOOT_TIMEOUT_MS);
		await guest.stop();
	}, BUILD_TIMEOUT_MS + BOOT_TIMEOUT_MS);

	it("two concurrent builds of different scripts on one platform each embed their own script", async () => {
		const first = markedScript("first");
		const second = markedScript("second");
		const inputs = { platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "lkrn" };
		const [a, b] = await Promise.all([build({ ...inputs, script: first.script }), build({ ...inputs, script: second.script })]);
		expect(a.row).toMatchObject({ status: "done", embedded: true });
		expect(b.row).toMatchObject({ status: "done", embedded: true });
		const [fileA, fileB] = [await download(a.row.url, "first.lkrn"), await download(b.row.url, "second.lkrn")];
		expect(fs.readFileSync(fileA).equals(fs.readFileSync(fileB))).toBe(false);
		const guestA = bootLkrn(fileA);
		const guestB = bootLkrn(fileB);
		await recorder.waitFor(new RegExp(`^${first.marker}$`), BOOT_TIMEOUT_MS);
		await recorder.waitFor(new RegExp(`^${second.marker}$`), BOOT_TIMEOUT_MS);
		await Promise.all([guestA.stop(), guestB.stop()]);
		// Each guest asked only for its own marker: the scripts were not crossed.
		expect(recorder.paths.filter((p) => p === first.marker || p === second.marker).sort()).toEqual([first.marker, second.marker].sort());
	}, BUILD_TIMEOUT_MS + 2 * BOOT_TIMEOUT_MS);

	it("GET /api/ipxes/toolchain: the worker builds from the source tree, every buildable platform prepared or being prepared", async () => {
		const response = await provisioner.api("/ipxes/toolchain");
		expect(response.status).toBe(200);
		const { workers } = await response.json();
		expect(workers).toHaveLength(1);
		const [toolchain] = workers;
		expect(toolchain).toMatchObject({ mode: "source", embedded: true, fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/) });
		expect(toolchain.source).toMatch(/src$/);
		const states = Object.fromEntries(toolchain.platforms.map((p: { platform: string; state: string }) => [p.platform, p.state]));
		expect(Object.keys(states).sort()).toEqual(["bin", "bin-arm64-efi", "bin-i386-efi", "bin-x86_64-efi", "bin-x86_64-pcbios"]);
		for (const state of Object.values(states)) expect(["prepared", "preparing"]).toContain(state);
	});

	it.each([
		["bin-i386-efi", 0x014c],
		["bin-arm64-efi", 0xaa64],
	])("%s/ipxe.efi: built with the script embedded, a PE image for its machine", async (platform, machine) => {
		const { script, marker } = markedScript(platform);
		const { row } = await build({ script, platform, driver: "ipxe", extension: "efi" });
		expect(row).toMatchObject({ status: "done", error: null, embedded: true });
		const bytes = fs.readFileSync(await download(row.url, `${platform}.efi`));
		const pe = bytes.readUInt32LE(0x3c);
		expect(bytes.toString("latin1", pe, pe + 4)).toBe("PE\0\0");
		expect(bytes.readUInt16LE(pe + 4)).toBe(machine);
		// EFI images are not compressed: the script is in the binary as written.
		expect(bytes.includes(Buffer.from(marker))).toBe(true);
	}, BUILD_TIMEOUT_MS);

	it("the seed's BIOS example (bin-x86_64-pcbios, ipxe, kpxe) builds for real on the prepared tree", async () => {
		const { row } = await build({ script: "#!ipxe\ndhcp\nchain http://services.example:30002/api/mainscripts/1", platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "kpxe" });
		expect(row).toMatchObject({ status: "done", embedded: true });
		expect(row.toolchain).toContain("bin-x86_64-pcbios/ipxe.kpxe");
		const bytes = fs.readFileSync(await download(row.url, "ipxe.kpxe"));
		expect(bytes.length).toBeGreaterThan(50_000);
		expect(bytes.equals(fs.readFileSync("/usr/lib/ipxe/undionly.kpxe"))).toBe(false);
	}, BUILD_TIMEOUT_MS);
});
