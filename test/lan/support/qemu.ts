import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Lan } from "./netns";

export type Firmware = "bios" | "uefi";

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd";

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
export function bootGuest(lan: Lan, options: { firmware: Firmware; tap: string; mac: string; dir: string; maxSeconds: number }): Guest {
	const serialLog = path.join(options.dir, `serial-${options.firmware}.log`);
	fs.writeFileSync(serialLog, "");
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
	// QEMU's NIC option ROMs are iPXE builds: under OVMF the ROM is dropped so that the firmware's own
	// PXE client (OVMF's VirtioNetDxe + PxeBcDxe) boots, fetches ipxe.efi by TFTP, and only that iPXE
	// asks for the script. SeaBIOS has no PXE client of its own, so BIOS boots keep the ROM.
	const rom = options.firmware === "uefi" ? ",romfile=" : "";
	args.push("-device", `virtio-net-pci,netdev=lan,mac=${options.mac},bootindex=1${rom}`);
	if (options.firmware === "uefi") {
		const vars = path.join(options.dir, "OVMF_VARS.fd");
		fs.copyFileSync(OVMF_VARS, vars);
		args.push("-drive", `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, "-drive", `if=pflash,format=raw,file=${vars}`);
	} else {
		args.push("-boot", "n");
	}
	// `timeout` bounds the machine even if the test process dies before its afterAll.
	const child = lan.spawnIn(lan.ns.bridge, "timeout", ["-s", "KILL", String(options.maxSeconds), "qemu-system-x86_64", ...args], { stdio: ["ignore", "ignore", "pipe"] });
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
