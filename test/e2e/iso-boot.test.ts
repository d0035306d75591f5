import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { storeFor } from "@clusterplatform/core";
import { startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { eventually } from "../support/ports";
import { OVMF_CODE, OVMF_VARS, startQemu, startRequestRecorder, type RequestRecorder } from "../support/boot-qemu";
import { ipxeSource } from "../support/ipxe-source";
import { itIf } from "../support/requirements";

/**
 * The heart of the media path: an ISO built through the REST API from GRUB and SYSLINUX parts
 * (and Debian's prebuilt iPXE) boots in QEMU and its script reaches the provisioner.
 *
 * BIOS (CD and raw disk): isolinux → ipxe.lkrn + the ISO's script as INITRD → `dhcp` →
 * `chain` the provisioner's mainscript → which chains the test's recorder: the recorder seeing
 * the request proves the whole chain. UEFI: OVMF → El Torito grub.img → GRUB finds the ISO by
 * label → chainloads ipxe.efi (serial output shows GRUB's messages and the iPXE banner). Debian's
 * prebuilt ipxe.efi cannot take a script from the ISO; the last test builds one with the script
 * embedded from the iPXE source tree (the one scripts/setup installs, or IPXE_SOURCE_DIR).
 */

const LABEL = "Cluster Platform Provisioner ISO";
const IPXE_LKRN = "/usr/lib/ipxe/ipxe.lkrn";
const IPXE_EFI = "/usr/lib/ipxe/ipxe.efi";
const BOOT_TIMEOUT_MS = 120_000;
const IPXE_BANNER = /iPXE initialising devices|iPXE \d+\.\d+/;

jest.setTimeout(600_000);

describe("ISO boot (QEMU, software CPU)", () => {
	let provisioner: TestProvisioner;
	let recorder: RequestRecorder;
	let scratch: string;
	let iso: string;
	let isoRow: any;
	let mainscriptId: number;

	async function finished(entity: string, id: number) {
		return eventually(async () => {
			const row = await (await provisioner.api(`/${entity}/${id}`)).json();
			return ["done", "failed"].includes(row.status) ? row : undefined;
		}, 120_000, `${entity} ${id} finished`);
	}

	async function build(entity: string, body: Record<string, unknown>) {
		const response = await provisioner.api(`/${entity}`, { method: "POST", json: body });
		const created = await response.json();
		if (response.status !== 201) throw new Error(`POST /${entity} answered ${response.status}: ${JSON.stringify(created)}`);
		const row = await finished(entity, created.id);
		if (row.status !== "done") throw new Error(`${entity} ${row.id} failed: ${row.error}`);
		return row;
	}

	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-iso-boot-"));
		recorder = await startRequestRecorder();
		provisioner = await startTestProvisioner({
			services: ["gateway", "mainscripts", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"],
		});
		// The mainscript the ISO's script chains; it chains the recorder, so a request there proves the chain.
		const mainscript = await (
			await provisioner.api("/mainscripts", { method: "POST", json: { text: `#!ipxe\nchain http://10.0.2.2:${recorder.port}/reached-via-mainscript\n` } })
		).json();
		mainscriptId = mainscript.id;
		const port = new URL(provisioner.baseUrl).port;
		const script = `#!ipxe\ndhcp\nchain http://10.0.2.2:${port}/api/mainscripts/${mainscript.id}\n`;

		// iPXE parts: Debian's prebuilt binaries, put into this provisioner's store (own store URLs).
		const store = storeFor(provisioner.config);
		const ipxeBios = await store.putFile("test-parts/ipxe.lkrn", IPXE_LKRN);
		const ipxeUefi = await store.putFile("test-parts/ipxe.efi", IPXE_EFI);

		const [grubImg, grubEfiX64, grubEfiX86, ldLinux, isolinuxBin, isohdpfxBin] = await Promise.all([
			build("grubs", { label: LABEL, platform: "x86_64-efi", architecture: "x64", extension: "efi", fragment: "img" }),
			build("grubs", { label: LABEL, platform: "x86_64-efi", architecture: "x64", extension: "efi", fragment: "efi" }),
			build("grubs", { label: LABEL, platform: "x86_64-efi", architecture: "x86", extension: "efi", fragment: "efi" }),
			build("syslinuxs", { fragment: "ldlinux.c32" }),
			build("syslinuxs", { fragment: "isolinux.bin" }),
			build("syslinuxs", { fragment: "isohdpfx.bin" }),
		]);
		// The seed's shape: every part by URL.
		isoRow = await build("isos", {
			label: LABEL,
			ipxeUefiUrl: ipxeUefi.url,
			ipxeBiosUrl: ipxeBios.url,
			grubImgUrl: grubImg.url,
			grubEfiX64Url: grubEfiX64.url,
			grubEfiX86Url: grubEfiX86.url,
			ldLinuxUrl: ldLinux.url,
			isolinuxBinUrl: isolinuxBin.url,
			isohdpfxBinUrl: isohdpfxBin.url,
			script,
		});
		iso = path.join(scratch, "dist.iso");
		const download = await fetch(isoRow.url);
		expect(download.status).toBe(200);
		fs.writeFileSync(iso, Buffer.from(await download.arrayBuffer()));
	}, 300_000);

	afterAll(async () => {
		await recorder?.stop();
		await provisioner?.stop();
		if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
	});

	it("is a hybrid ISO: ISO9660 with the label, an MBR partition table and the expected files", () => {
		const head = fs.readFileSync(iso).subarray(0, 64 * 1024);
		expect(head.readUInt16LE(510)).toBe(0xaa55); // isohybrid MBR
		expect(head.subarray(0x8001, 0x8006).toString("latin1")).toBe("CD001");
		expect(head.subarray(0x8028, 0x8028 + 32).toString("latin1").trimEnd()).toBe(LABEL);
		expect(isoRow.url).toMatch(/\/isos\/\d+\/dist\.iso$/);
	});

	async function bootUntil(args: string[], pattern: RegExp) {
		const before = recorder.paths.length;
		const qemu = startQemu(scratch, args, BOOT_TIMEOUT_MS);
		const started = Date.now();
		try {
			await recorder.waitFor(pattern, BOOT_TIMEOUT_MS - 5000, before).catch((err) => {
				throw new Error(`${err.message}\nserial:\n${qemu.serial().slice(-2000)}`);
			});
			console.log(`${args.join(" ").slice(0, 60)}…: script's request arrived after ${Date.now() - started} ms`);
			return recorder.paths.slice(before);
		} finally {
			await qemu.stop();
		}
	}

	const network = ["-netdev", "user,id=n0", "-device", "e1000,netdev=n0"];

	it("BIOS (SeaBIOS) from CD: isolinux → iPXE → the ISO's script → the provisioner's mainscript", async () => {
		const paths = await bootUntil(["-cdrom", iso, "-boot", "d", ...network], /^\/reached-via-mainscript$/);
		expect(paths).toContain("/reached-via-mainscript");
	});

	it("BIOS (SeaBIOS) as a raw disk (USB stick): the isohybrid MBR boots the same chain", async () => {
		const disk = path.join(scratch, "usb.img");
		fs.copyFileSync(iso, disk);
		const paths = await bootUntil(["-drive", `file=${disk},format=raw,if=ide`, "-boot", "c", ...network], /^\/reached-via-mainscript$/);
		expect(paths).toContain("/reached-via-mainscript");
	});

	/** OVMF with the ISO as CD or raw disk (bootindex 0, or OVMF falls into its shell); resolves once iPXE's banner shows. */
	async function bootUefi(isoFile: string, media: "cd" | "disk", bootfile: string | null, until: () => Promise<unknown>) {
		const vars = path.join(scratch, `OVMF_VARS-${Date.now()}.fd`);
		fs.copyFileSync(OVMF_VARS, vars);
		const drive =
			media === "cd"
				? ["-drive", `file=${isoFile},media=cdrom,if=none,id=boot0,readonly=on`, "-device", "ide-cd,drive=boot0,bootindex=0"]
				: ["-drive", `file=${isoFile},format=raw,if=none,id=boot0,snapshot=on`, "-device", "ide-hd,drive=boot0,bootindex=0"];
		const qemu = startQemu(scratch, [
			"-drive", `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`,
			"-drive", `if=pflash,format=raw,file=${vars}`,
			...drive,
			"-netdev", bootfile ? `user,id=n0,bootfile=${bootfile}` : "user,id=n0",
			"-device", "e1000,netdev=n0",
		], BOOT_TIMEOUT_MS);
		const started = Date.now();
		try {
			// iPXE's own banner (GRUB's messages mention iPXE too, so they do not count).
			const serial = await eventually(() => (IPXE_BANNER.test(qemu.serial()) ? qemu.serial() : undefined), BOOT_TIMEOUT_MS - 5000, "the iPXE banner on the serial port").catch((err) => {
				throw new Error(`${err.message}\nserial:\n${qemu.serial().slice(-3000)}`);
			});
			console.log(`UEFI ${media}: GRUB chainloaded iPXE after ${Date.now() - started} ms`);
			expect(serial).toContain(`looking for the volume labelled ${LABEL}`);
			expect(serial).toContain("chainloading iPXE from");
			expect(serial).not.toContain("could not start");
			await until().catch((err) => {
				throw new Error(`${err.message}\nserial:\n${qemu.serial().slice(-3000)}`);
			});
			console.log(`UEFI ${media}: done after ${Date.now() - started} ms`);
		} finally {
			await qemu.stop();
			fs.rmSync(vars, { force: true });
		}
	}

	it("UEFI (OVMF) from CD: El Torito grub.img → GRUB finds the ISO by label → chainloads iPXE, which runs the script DHCP gives it", async () => {
		const before = recorder.paths.length;
		const port = new URL(provisioner.baseUrl).port;
		// What a distributor does for UEFI clients: hand iPXE a script URL by DHCP (QEMU's DHCP server here).
		await bootUefi(iso, "cd", `http://10.0.2.2:${port}/api/mainscripts/${mainscriptId}`, () =>
			recorder.waitFor(/^\/reached-via-mainscript$/, BOOT_TIMEOUT_MS - 5000, before),
		);
		console.log(
			"UEFI: this ISO's own script is not exercised here: Debian's prebuilt ipxe.efi cannot take a script from the ISO " +
				"(it only gets one from DHCP, i.e. from a distributor). The last test boots an ipxe.efi built from source with the script embedded.",
		);
	});

	it("UEFI (OVMF) as a raw disk (USB stick): the isohybrid GPT's EFI partition → GRUB → iPXE", async () => {
		await bootUefi(iso, "disk", null, async () => undefined);
	});

	itIf(ipxeSource().reason, "UEFI with an ipxe.efi built from the iPXE source tree with the ISO's script embedded: the script reaches the mainscript", async () => {
		// A provisioner of its own with the ipxes builder (package @clusterplatform/ipxe) building from the source tree.
		const withIpxe = await startTestProvisioner({ services: ["gateway", "mainscripts", "ipxes", "ipxes-worker", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"] });
		try {
			const port = new URL(withIpxe.baseUrl).port;
			const main = await (await withIpxe.api("/mainscripts", { method: "POST", json: { text: `#!ipxe\nchain http://10.0.2.2:${recorder.port}/reached-via-embedded-uefi-script\n` } })).json();
			const post = async (entity: string, body: unknown) => {
				const created = await (await withIpxe.api(`/${entity}`, { method: "POST", json: body })).json();
				return eventually(async () => {
					const row = await (await withIpxe.api(`/${entity}/${created.id}`)).json();
					if (row.status === "failed") throw new Error(`${entity} ${row.id} failed: ${row.error}`);
					return row.status === "done" ? row : undefined;
				}, 540_000, `${entity} ${created.id} done`);
			};
			const script = `#!ipxe\ndhcp\nchain http://10.0.2.2:${port}/api/mainscripts/${main.id}\n`;
			const [ipxeEfi, grubImg, ldLinux, isolinuxBin, isohdpfxBin] = await Promise.all([
				post("ipxes", { script, platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" }),
				post("grubs", { label: LABEL, architecture: "x64", fragment: "img" }),
				post("syslinuxs", { fragment: "ldlinux.c32" }),
				post("syslinuxs", { fragment: "isolinux.bin" }),
				post("syslinuxs", { fragment: "isohdpfx.bin" }),
			]);
			expect(ipxeEfi.embedded).toBe(true);
			const store = storeFor(withIpxe.config);
			const isoRow = await post("isos", {
				label: LABEL,
				ipxeUefiId: ipxeEfi.id,
				ipxeBiosUrl: (await store.putFile("test-parts/ipxe.lkrn", IPXE_LKRN)).url,
				grubImgId: grubImg.id,
				ldLinuxId: ldLinux.id,
				isolinuxBinId: isolinuxBin.id,
				isohdpfxBinId: isohdpfxBin.id,
			});
			const file = path.join(scratch, "embedded-uefi.iso");
			fs.writeFileSync(file, Buffer.from(await (await fetch(isoRow.url)).arrayBuffer()));
			const before = recorder.paths.length;
			// No DHCP boot file this time: the script can only come from the binary on the ISO.
			await bootUefi(file, "cd", null, () => recorder.waitFor(/^\/reached-via-embedded-uefi-script$/, BOOT_TIMEOUT_MS - 5000, before));
		} finally {
			await withIpxe.stop();
		}
	});
});
