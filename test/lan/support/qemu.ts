import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Lan } from "./netns";

/** SeaBIOS; OVMF x64; OVMF ia32 (ovmf-ia32) on a 64-bit CPU; AAVMF on qemu-system-aarch64 -M virt. */
export type Firmware = "bios" | "uefi" | "uefi-ia32" | "aavmf";

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd";
/** Debian's ovmf-ia32 ships only a Secure Boot build: it needs SMM (q35, smm=on, secure flash); with empty VARS nothing is enforced. */
export const OVMF_IA32_CODE = "/usr/share/OVMF/OVMF32_CODE_4M.secboot.fd";
export const OVMF_IA32_VARS = "/usr/share/OVMF/OVMF32_VARS_4M.fd";
export const AAVMF_CODE = "/usr/share/AAVMF/AAVMF_CODE.fd";
export const AAVMF_VARS = "/usr/share/AAVMF/AAVMF_VARS.fd";

/** The firmware files and QEMU binary a firmware kind needs (what a suite checks before it boots one). */
export const FIRMWARE_FILES: Record<Firmware, string[]> = {
	bios: ["/usr/share/seabios/bios-256k.bin"],
	uefi: [OVMF_CODE, OVMF_VARS],
	"uefi-ia32": [OVMF_IA32_CODE, OVMF_IA32_VARS],
	aavmf: [AAVMF_CODE, AAVMF_VARS],
};
export const QEMU_OF: Record<Firmware, string> = { bios: "qemu-system-x86_64", uefi: "qemu-system-x86_64", "uefi-ia32": "qemu-system-x86_64", aavmf: "qemu-system-aarch64" };

export interface Guest {
	child: ChildProcess;
	serialLog: string;
	/** Everything the guest wrote to its serial port so far. */
	serial(): string;
}

/**
 * A QEMU machine network-booting on a tap of the test LAN (software CPU: /dev/kvm may exist and
 * still fail). BIOS: SeaBIOS `-boot n` (PXE by the NIC's iPXE ROM); UEFI: OVMF's own PXE client
 * with the NIC first in the boot order. The
 * serial port goes to a file the test reads; QEMU stops itself after `maxSeconds` at most.
 */
export interface GuestOptions {
	firmware: Firmware;
	tap: string;
	mac: string;
	dir: string;
	maxSeconds: number;
	/** Names the serial log and VARS copy (default: the firmware). */
	name?: string;
	/** BIOS: the NIC's option ROM instead of QEMU's iPXE one (e.g. a PXE firmware stand-in, support/pxe-rom.ts). */
	romfile?: string;
	/**
	 * UEFI: boot by UEFI HTTP boot. EDK2 tries PXEv4, PXEv6, HTTPv4, HTTPv6 in turn; its fw_cfg
	 * switches opt/org.tianocore/IPv{4,6}PXESupport=n remove the PXE options, so HTTPv4 goes first.
	 */
	httpBoot?: boolean;
}

export function bootGuest(lan: Lan, options: GuestOptions): Guest {
	const serialLog = serialLogOf(options);
	fs.writeFileSync(serialLog, "");
	const args = guestArgs(options, serialLog);
	// `timeout` bounds the machine even if the test process dies before its afterAll.
	const child = lan.spawnIn(lan.ns.bridge, "timeout", ["-s", "KILL", String(options.maxSeconds), QEMU_OF[options.firmware], ...args], { stdio: ["ignore", "ignore", "pipe"] });
	let stderr = "";
	child.stderr!.on("data", (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	return {
		child,
		serialLog,
		serial: () => fs.readFileSync(serialLog, "utf8") + (stderr ? `\n[qemu stderr] ${stderr}` : ""),
	};
}

/** Where a guest's serial port is written. */
export function serialLogOf(options: Pick<GuestOptions, "dir" | "name" | "firmware">): string {
	return path.join(options.dir, `serial-${options.name ?? options.firmware}.log`);
}

/**
 * The QEMU arguments (after the binary) of a guest network-booting on a LAN tap: what bootGuest
 * runs, and what a simulated BMC starts on power-on (managed-guest.ts). Writes the VARS copy for UEFI.
 */
export function guestArgs(options: Omit<GuestOptions, "maxSeconds">, serialLog: string): string[] {
	const name = options.name ?? options.firmware;
	const args = [
		"-accel", "tcg",
		"-m", "512",
		"-nodefaults",
		"-display", "none",
		"-vga", "none",
		"-serial", `file:${serialLog}`,
		"-netdev", `tap,id=lan,ifname=${options.tap},script=no,downscript=no`,
		"-no-reboot",
	];
	// QEMU's NIC option ROMs are iPXE builds: under UEFI the ROM is dropped so that the firmware's own
	// PXE client (OVMF's VirtioNetDxe + PxeBcDxe) boots, fetches ipxe.efi by TFTP, and only that iPXE
	// asks for the script. SeaBIOS has no PXE client of its own, so BIOS boots keep a ROM: QEMU's
	// iPXE, or the given one.
	const rom = options.firmware === "bios" ? (options.romfile ? `,romfile=${options.romfile}` : "") : ",romfile=";
	args.push("-device", `virtio-net-pci,netdev=lan,mac=${options.mac},bootindex=1${rom}`);
	const pflash = (code: string, varsTemplate: string) => {
		const vars = path.join(options.dir, `VARS-${name}.fd`);
		fs.copyFileSync(varsTemplate, vars);
		args.push("-drive", `if=pflash,format=raw,readonly=on,file=${code}`, "-drive", `if=pflash,format=raw,file=${vars}`);
	};
	if (options.firmware === "uefi") pflash(OVMF_CODE, OVMF_VARS);
	else if (options.firmware === "uefi-ia32") {
		args.push("-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on");
		pflash(OVMF_IA32_CODE, OVMF_IA32_VARS);
	} else if (options.firmware === "aavmf") {
		args.push("-machine", "virt", "-cpu", "cortex-a57");
		pflash(AAVMF_CODE, AAVMF_VARS);
	} else args.push("-boot", "n");
	if (options.httpBoot) {
		if (options.firmware === "bios") throw new Error("UEFI HTTP boot needs UEFI firmware");
		args.push("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n");
	}
	return args;
}
