import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { EFI_ARCHES, peMachine } from "@clusterplatform/iso";
import { startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { eventually } from "../support/ports";
import { ipxeSource } from "../support/ipxe-source";
import { recordCell, type MatrixFirmware, type MatrixPath } from "../support/boot-matrix";
import { startQemu, startRequestRecorder, uefiFirmware, uefiFlashArgs, OVMF_CODE, OVMF_VARS, type RequestRecorder, type UefiFirmware } from "../support/boot-qemu";
import { describeIf, missingFile, missingProgram } from "../support/requirements";

/**
 * The media cells of the boot matrix (issue 12): one hybrid ISO, built entirely through the API
 * from iPXE compiled with the script embedded (ipxes: bin-x86_64-pcbios lkrn, bin-x86_64-efi,
 * bin-i386-efi and bin-arm64-efi efi), GRUB's El Torito image and SYSLINUX, boots in QEMU (TCG) on
 * every firmware Debian ships, from CD and as a USB stick, and the embedded script's HTTP request
 * arrives at a recorder on the host. No distributor and no DHCP boot file: QEMU's DHCP server
 * hands out an address only, and the NICs carry no option ROM, so the request can only come from
 * the iPXE on the ISO. The script names iPXE's platform, CPU and MAC in the URL, so each request is
 * the proof of the loader the firmware picked.
 *
 * Chains: SeaBIOS: El Torito (CD) or the isohybrid MBR (USB) → isolinux → ipxe.lkrn. OVMF x64:
 * El Torito EFI image (CD) or the isohybrid GPT's EFI partition (USB) → GRUB BOOTX64.EFI → finds
 * the ISO by label → /ipxe.efi. OVMF ia32 / AAVMF arm64: the same EFI image → BOOTIA32.EFI /
 * BOOTAA64.EFI, which is iPXE itself (the ISO's ipxeIa32/ipxeArm64 parts).
 */

const LABEL = "CPP MEDIA MATRIX";
const BUILD_TIMEOUT_MS = 480_000;
/** Upper bounds of one boot, power-on to the script's request (TCG on a busy 2-core machine). */
const BIOS_BOOT_MS = 120_000;
const UEFI_BOOT_MS = 180_000;
const ARM64_BOOT_MS = 240_000;
const SEABIOS = "/usr/share/seabios/bios-256k.bin";

const source = ipxeSource();
const ia32 = uefiFirmware("i386");
const arm64 = uefiFirmware("aarch64");

function cannotRun(): string | null {
	if (source.reason) return source.reason;
	const missing = missingProgram(["qemu-system-x86_64", "xorriso", "mdir"]) ?? missingFile([SEABIOS, OVMF_CODE, OVMF_VARS]);
	if (missing) return missing;
	if (ia32.reason) return `OVMF ia32: ${ia32.reason} (package ovmf-ia32)`;
	if (arm64.reason) return `AAVMF arm64: ${arm64.reason} (packages qemu-efi-aarch64, qemu-system-arm)`;
	return null;
}

jest.setTimeout(600_000);

describeIf(cannotRun(), "boot matrix: the ISO on every firmware (QEMU, software CPU)", matrix);

function matrix() {
	let provisioner: TestProvisioner;
	let recorder: RequestRecorder;
	let scratch: string;
	let iso: string;
	const ipxes: Record<string, any> = {};

	async function build(entity: string, body: Record<string, unknown>) {
		const response = await provisioner.api(`/${entity}`, { method: "POST", json: body });
		const created = await response.json();
		if (response.status !== 201) throw new Error(`POST /${entity} answered ${response.status}: ${JSON.stringify(created)}`);
		const row = await eventually(async () => {
			const current = await (await provisioner.api(`/${entity}/${created.id}`)).json();
			return ["done", "failed"].includes(current.status) ? current : undefined;
		}, BUILD_TIMEOUT_MS, `${entity} ${created.id} finished`);
		if (row.status !== "done") throw new Error(`${entity} ${row.id} failed: ${row.error}`);
		return row;
	}

	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-boot-matrix-media-"));
		recorder = await startRequestRecorder();
		provisioner = await startTestProvisioner({
			services: ["gateway", "ipxes", "ipxes-worker", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"],
		});
		const { workers } = await (await provisioner.api("/ipxes/toolchain")).json();
		expect(workers).toEqual([expect.objectContaining({ mode: "source", embedded: true })]);
		// One script for every loader: iPXE fills in its platform, CPU and MAC, so a request names who sent it.
		const script = `#!ipxe\ndhcp\nchain http://10.0.2.2:${recorder.port}/media/\${platform}/\${buildarch}/\${net0/mac:hexhyp}\n`;
		const started = Date.now();
		const [bios, x64, i386, aa64, grubImg, ldLinux, isolinuxBin, isohdpfxBin] = await Promise.all([
			build("ipxes", { script, platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "lkrn" }),
			build("ipxes", { script, platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" }),
			build("ipxes", { script, platform: "bin-i386-efi", driver: "ipxe", extension: "efi" }),
			build("ipxes", { script, platform: "bin-arm64-efi", driver: "ipxe", extension: "efi" }),
			build("grubs", { label: LABEL, architecture: "x64", fragment: "img" }),
			build("syslinuxs", { fragment: "ldlinux.c32" }),
			build("syslinuxs", { fragment: "isolinux.bin" }),
			build("syslinuxs", { fragment: "isohdpfx.bin" }),
		]);
		Object.assign(ipxes, { bios, x64, i386, aa64 });
		for (const row of [bios, x64, i386, aa64]) expect(row).toMatchObject({ embedded: true });
		const isoRow = await build("isos", {
			label: LABEL,
			ipxeBiosId: bios.id,
			ipxeUefiId: x64.id,
			ipxeIa32Id: i386.id,
			ipxeArm64Id: aa64.id,
			grubImgId: grubImg.id,
			ldLinuxId: ldLinux.id,
			isolinuxBinId: isolinuxBin.id,
			isohdpfxBinId: isohdpfxBin.id,
		});
		console.log(`media matrix: iPXE ×4, GRUB, SYSLINUX ×3 and the ISO built through the API in ${Date.now() - started} ms`);
		iso = path.join(scratch, "dist.iso");
		const download = await fetch(isoRow.url);
		expect(download.status).toBe(200);
		fs.writeFileSync(iso, Buffer.from(await download.arrayBuffer()));
	}, BUILD_TIMEOUT_MS + 60_000);

	afterAll(async () => {
		await recorder?.stop();
		await provisioner?.stop();
		if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
	});

	it("refuses an iPXE row of the wrong CPU as a UEFI loader, naming the field", async () => {
		for (const [field, row, expected] of [["ipxeIa32Id", ipxes.x64, "bin-i386-efi"], ["ipxeArm64Id", ipxes.i386, "bin-arm64-efi"], ["ipxeUefiId", ipxes.aa64, "bin-x86_64-efi"]] as const) {
			const response = await provisioner.api("/isos", {
				method: "POST",
				json: { label: LABEL, ipxeBiosId: ipxes.bios.id, ipxeUefiId: ipxes.x64.id, [field]: row.id, grubImgUrl: "https://example.org/grub.img", ldLinuxUrl: "https://example.org/l", isolinuxBinUrl: "https://example.org/i", isohdpfxBinUrl: "https://example.org/m" },
			});
			const body = await response.json();
			expect(response.status).toBe(422);
			expect(body.data).toEqual([expect.objectContaining({ field, message: expect.stringContaining(`not ${expected}`) })]);
		}
	});

	it("carries a loader for every firmware: isolinux → ipxe.lkrn, and an El Torito EFI image with BOOTX64 (GRUB), BOOTIA32 and BOOTAA64 (iPXE)", () => {
		const listing = execFileSync("xorriso", ["-indev", iso, "-find", "/", "-type", "f"], { stdio: ["ignore", "pipe", "ignore"] }).toString();
		for (const file of ["/ipxe.lkrn", "/ipxe.efi", "/boot/efiboot.img", "/EFI/BOOT/BOOTIA32.EFI", "/EFI/BOOT/BOOTAA64.EFI", "/isolinux/isolinux.bin"]) expect(listing).toContain(`'${file}'`);
		expect(listing).not.toContain("'/boot/grub.img'");
		const image = path.join(scratch, "efiboot.img");
		execFileSync("xorriso", ["-osirrox", "on", "-indev", iso, "-extract", "/boot/efiboot.img", image], { stdio: "ignore" });
		for (const [arch, { machine, loader }] of Object.entries(EFI_ARCHES)) {
			const out = path.join(scratch, loader);
			execFileSync("mcopy", ["-n", "-i", image, `::/EFI/BOOT/${loader}`, out], { env: { ...process.env, MTOOLS_SKIP_CHECK: "1" } });
			expect([arch, peMachine(fs.readFileSync(out))]).toEqual([arch, machine]);
		}
	});

	interface Cell {
		firmware: MatrixFirmware;
		path: MatrixPath;
		mac: string;
		/** The request the ISO's iPXE makes: /media/<platform>/<buildarch>/<mac>. */
		expect: string;
		chain: string;
		qemu: string;
		args: string[];
		timeoutMs: number;
		memoryMiB?: number;
		/** Serial output that must have appeared on the way. */
		serialShows?: string[];
		cleanup?: () => void;
	}

	/** Boots one cell until its request arrives; records it as booted with power-on → script time. */
	async function boot(cell: Cell): Promise<number> {
		const qemu = startQemu(scratch, cell.args, cell.timeoutMs, { qemu: cell.qemu, memoryMiB: cell.memoryMiB });
		const started = Date.now();
		try {
			const want = new RegExp(`^${cell.expect.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
			await recorder.waitFor(want, cell.timeoutMs - 2000).catch((err) => {
				throw new Error(`${cell.firmware} ${cell.path}: ${err.message}\nserial:\n${qemu.serial().slice(-3000)}`);
			});
			const scriptMs = Date.now() - started;
			for (const text of cell.serialShows ?? []) expect(qemu.serial()).toContain(text);
			recordCell({ firmware: cell.firmware, path: cell.path, status: "booted", scriptMs, chain: cell.chain });
			console.log(`${cell.firmware} ${cell.path}: the embedded script's request arrived ${scriptMs} ms after power-on (${cell.chain})`);
			return scriptMs;
		} finally {
			await qemu.stop();
			cell.cleanup?.();
		}
	}

	/** Both cells of a firmware at once (one QEMU per core); every failure is reported. */
	async function bootAll(cells: Cell[]): Promise<void> {
		const results = await Promise.allSettled(cells.map(boot));
		const failed = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason?.message ?? r.reason)] : []));
		if (failed.length) throw new Error(failed.join("\n\n"));
	}

	let macCounter = 0;
	const nextMac = () => `52:54:00:c0:ff:${(++macCounter).toString(16).padStart(2, "0")}`;
	const hexhyp = (mac: string) => mac.replace(/:/g, "-");
	/** A NIC without option ROM: only the ISO's iPXE (its own driver) can use it. */
	const x86Nic = (mac: string) => ["-netdev", "user,id=n0", "-device", `e1000,netdev=n0,mac=${mac},romfile=`];
	const usbStick = (file: string) => ["-device", "qemu-xhci,id=xhci", "-drive", `file=${file},format=raw,if=none,id=stick,snapshot=on`, "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"];

	function uefiCell(firmware: MatrixFirmware, fw: Pick<UefiFirmware, "code" | "varsTemplate" | "qemu" | "machineArgs">, media: MatrixPath, buildarch: string, extra: Partial<Cell>): Cell {
		const flash = uefiFlashArgs(fw, scratch);
		const mac = nextMac();
		return {
			firmware,
			path: media,
			mac,
			expect: `/media/efi/${buildarch}/${hexhyp(mac)}`,
			chain: "",
			qemu: fw.qemu,
			args: [...fw.machineArgs, ...flash.args],
			timeoutMs: UEFI_BOOT_MS,
			cleanup: flash.cleanup,
			...extra,
		};
	}

	it("SeaBIOS x86_64: the ISO as CD and as USB stick → isolinux → iPXE runs its embedded script", async () => {
		const cd = nextMac();
		const usb = nextMac();
		await bootAll([
			{
				firmware: "seabios-x86_64", path: "iso-cd", mac: cd, expect: `/media/pcbios/x86_64/${hexhyp(cd)}`, qemu: "qemu-system-x86_64", timeoutMs: BIOS_BOOT_MS,
				chain: "El Torito → isolinux → ipxe.lkrn (bin-x86_64-pcbios, script embedded)",
				args: ["-drive", `file=${iso},media=cdrom,if=none,id=cd,readonly=on`, "-device", "ide-cd,drive=cd,bootindex=0", ...x86Nic(cd)],
			},
			{
				firmware: "seabios-x86_64", path: "iso-usb", mac: usb, expect: `/media/pcbios/x86_64/${hexhyp(usb)}`, qemu: "qemu-system-x86_64", timeoutMs: BIOS_BOOT_MS,
				chain: "USB stick (xHCI): isohybrid MBR → isolinux → ipxe.lkrn (bin-x86_64-pcbios, script embedded)",
				args: [...usbStick(iso), ...x86Nic(usb)],
			},
		]);
	});

	const ovmfX64 = { code: OVMF_CODE, varsTemplate: OVMF_VARS, qemu: "qemu-system-x86_64", machineArgs: [] as string[] };
	const grubSays = [`looking for the volume labelled ${LABEL}`, "chainloading iPXE from"];

	it("OVMF x64: the ISO as CD and as USB stick → GRUB → ipxe.efi runs its embedded script (no distributor, no DHCP boot file)", async () => {
		const cd = uefiCell("ovmf-x64", ovmfX64, "iso-cd", "x86_64", { chain: "El Torito EFI image → GRUB BOOTX64.EFI → /ipxe.efi (bin-x86_64-efi, script embedded)", serialShows: grubSays });
		const usb = uefiCell("ovmf-x64", ovmfX64, "iso-usb", "x86_64", { chain: "USB stick (xHCI): isohybrid GPT EFI partition → GRUB BOOTX64.EFI → /ipxe.efi (bin-x86_64-efi, script embedded)", serialShows: grubSays });
		cd.args.push("-drive", `file=${iso},media=cdrom,if=none,id=cd,readonly=on`, "-device", "ide-cd,drive=cd,bootindex=0", ...x86Nic(cd.mac));
		usb.args.push(...usbStick(iso), ...x86Nic(usb.mac));
		await bootAll([cd, usb]);
	});

	it("OVMF ia32 (ovmf-ia32): the ISO as CD and as USB stick → BOOTIA32.EFI = iPXE i386 runs its embedded script", async () => {
		const fw = ia32.firmware!;
		const cd = uefiCell("ovmf-ia32", fw, "iso-cd", "i386", { chain: "El Torito EFI image → BOOTIA32.EFI = iPXE (bin-i386-efi, script embedded)" });
		const usb = uefiCell("ovmf-ia32", fw, "iso-usb", "i386", { chain: "USB stick (xHCI): isohybrid GPT EFI partition → BOOTIA32.EFI = iPXE (bin-i386-efi, script embedded)" });
		// q35: the CD on its AHCI controller.
		cd.args.push("-drive", `file=${iso},media=cdrom,if=none,id=cd,readonly=on`, "-device", "ide-cd,drive=cd,bootindex=0", ...x86Nic(cd.mac));
		usb.args.push(...usbStick(iso), ...x86Nic(usb.mac));
		await bootAll([cd, usb]);
	});

	it("AAVMF arm64 (qemu-efi-aarch64): the ISO as CD → BOOTAA64.EFI = iPXE arm64 runs its embedded script", async () => {
		const fw = arm64.firmware!;
		const cd = uefiCell("aavmf-arm64", fw, "iso-cd", "arm64", {
			chain: "virtio-scsi CD: El Torito EFI image → BOOTAA64.EFI = iPXE (bin-arm64-efi, script embedded)",
			timeoutMs: ARM64_BOOT_MS,
			memoryMiB: 512,
		});
		cd.args.push(
			"-device", "virtio-scsi-pci,id=scsi0",
			"-drive", `file=${iso},media=cdrom,if=none,id=cd,readonly=on`, "-device", "scsi-cd,bus=scsi0.0,drive=cd,bootindex=0",
			"-netdev", "user,id=n0", "-device", `virtio-net-pci,netdev=n0,mac=${cd.mac},romfile=`,
		);
		await bootAll([cd]);
	});
}
