import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { freePort } from "./ports";

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd";

/** QEMU's firmware descriptors (docs/interop/firmware.json), as Debian's edk2 packages install them. */
export const FIRMWARE_DESCRIPTORS = "/usr/share/qemu/firmware";

export type GuestArch = "x86_64" | "i386" | "aarch64";

export interface UefiFirmware {
	/** The descriptor it was chosen from. */
	descriptor: string;
	/** The QEMU that runs it. */
	qemu: string;
	code: string;
	varsTemplate: string;
	features: string[];
	/** Machine options the firmware needs (q35 + SMM for a Secure Boot build, virt for arm64). */
	machineArgs: string[];
}

const QEMU_OF: Record<GuestArch, string> = { x86_64: "qemu-system-x86_64", i386: "qemu-system-i386", aarch64: "qemu-system-aarch64" };

/**
 * The UEFI firmware Debian installed for a guest architecture, chosen the way libvirt does from
 * QEMU's firmware descriptors, but preferring a build without Secure Boot and never one with
 * enrolled keys (iPXE is not signed). Null with the reason when there is none.
 */
export function uefiFirmware(arch: GuestArch): { firmware: UefiFirmware | null; reason: string | null } {
	let names: string[] = [];
	try {
		names = fs.readdirSync(FIRMWARE_DESCRIPTORS).filter((n) => n.endsWith(".json")).sort();
	} catch {
		return { firmware: null, reason: `${FIRMWARE_DESCRIPTORS} does not exist: no QEMU firmware package is installed` };
	}
	const candidates = names.flatMap((name) => {
		const descriptor = path.join(FIRMWARE_DESCRIPTORS, name);
		const d = JSON.parse(fs.readFileSync(descriptor, "utf8"));
		if (!d["interface-types"]?.includes("uefi") || d.mapping?.device !== "flash") return [];
		if (!d.targets?.some((t: { architecture: string }) => t.architecture === arch)) return [];
		const features: string[] = d.features ?? [];
		if (features.includes("enrolled-keys")) return [];
		const code: string = d.mapping.executable.filename;
		const varsTemplate: string = d.mapping["nvram-template"].filename;
		if (!fs.existsSync(code) || !fs.existsSync(varsTemplate)) return [];
		const machineArgs =
			arch === "aarch64"
				? ["-machine", "virt", "-cpu", "cortex-a57"]
				: features.includes("requires-smm")
					? ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
					: [];
		return [{ descriptor, qemu: QEMU_OF[arch], code, varsTemplate, features, machineArgs }];
	});
	candidates.sort((a, b) => Number(a.features.includes("secure-boot")) - Number(b.features.includes("secure-boot")));
	const firmware = candidates[0] ?? null;
	if (!firmware) return { firmware: null, reason: `no UEFI firmware for ${arch} in ${FIRMWARE_DESCRIPTORS} (without enrolled keys)` };
	if (!qemuInstalled(firmware.qemu)) return { firmware: null, reason: `${firmware.qemu} is not installed` };
	return { firmware, reason: null };
}

function qemuInstalled(binary: string): boolean {
	return (process.env.PATH ?? "/usr/bin").split(":").some((dir) => fs.existsSync(path.join(dir, binary)));
}

/** pflash drives for a UEFI firmware, its variable store a fresh copy in `dir` (removed by the returned cleanup). */
export function uefiFlashArgs(firmware: Pick<UefiFirmware, "code" | "varsTemplate">, dir: string): { args: string[]; cleanup(): void } {
	const vars = path.join(dir, `vars-${Date.now()}-${Math.random().toString(36).slice(2)}.fd`);
	fs.copyFileSync(firmware.varsTemplate, vars);
	return {
		args: ["-drive", `if=pflash,format=raw,readonly=on,file=${firmware.code}`, "-drive", `if=pflash,format=raw,file=${vars}`],
		cleanup: () => fs.rmSync(vars, { force: true }),
	};
}

export interface QemuOptions {
	/** The QEMU binary (default qemu-system-x86_64). */
	qemu?: string;
	/** Guest memory, MiB (default 256). */
	memoryMiB?: number;
}

export interface QemuRun {
	pid: number;
	/** Everything the guest wrote to its serial port so far. */
	serial(): string;
	/** Ends exactly this QEMU (by its PID); resolves when it has exited. */
	stop(): Promise<void>;
}

/**
 * A QEMU guest under the software CPU (TCG), no display, serial port to a file in `dir`, user-mode
 * networking (10.0.2.2 is the host's loopback). Killed after `timeoutMs` whatever happens.
 */
export function startQemu(dir: string, args: string[], timeoutMs: number, options: QemuOptions = {}): QemuRun {
	const serialFile = path.join(dir, `serial-${Date.now()}-${Math.random().toString(36).slice(2)}.log`);
	fs.writeFileSync(serialFile, "");
	const child: ChildProcess = spawn(
		options.qemu ?? "qemu-system-x86_64",
		["-accel", "tcg", "-m", String(options.memoryMiB ?? 256), "-display", "none", "-no-reboot", "-serial", `file:${serialFile}`, "-monitor", "none", ...args],
		{ stdio: ["ignore", "ignore", "pipe"] },
	);
	let stderr = "";
	child.stderr?.on("data", (chunk) => (stderr += chunk));
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
	const killer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
	return {
		pid: child.pid!,
		serial: () => fs.readFileSync(serialFile, "latin1") + (stderr ? `\n[qemu stderr] ${stderr}` : ""),
		async stop() {
			clearTimeout(killer);
			if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
			await exited;
		},
	};
}

export interface RequestRecorder {
	port: number;
	/** Paths requested so far, in order. */
	paths: string[];
	/** Resolves with the first request (from index `since` of paths on) whose path matches, or rejects after timeoutMs. */
	waitFor(pattern: RegExp, timeoutMs: number, since?: number): Promise<string>;
	stop(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 that records every path asked for and answers a tiny iPXE script. */
export async function startRequestRecorder(): Promise<RequestRecorder> {
	const port = await freePort();
	const paths: string[] = [];
	const waiters: { pattern: RegExp; resolve: (p: string) => void }[] = [];
	const server = http.createServer((req, res) => {
		const url = req.url ?? "/";
		paths.push(url);
		for (const waiter of waiters.filter((w) => w.pattern.test(url))) waiter.resolve(url);
		res.writeHead(200, { "Content-Type": "text/plain" });
		res.end("#!ipxe\necho reached the test recorder\nsleep 60\n");
	});
	await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
	return {
		port,
		paths,
		waitFor(pattern, timeoutMs, since = 0) {
			const seen = paths.slice(since).find((p) => pattern.test(p));
			if (seen) return Promise.resolve(seen);
			return new Promise((resolve, reject) => {
				const timer = setTimeout(() => reject(new Error(`no request matching ${pattern} within ${timeoutMs} ms (saw ${JSON.stringify(paths)})`)), timeoutMs);
				waiters.push({ pattern, resolve: (p) => (clearTimeout(timer), resolve(p)) });
			});
		},
		stop: () => new Promise<void>((resolve) => {
			server.closeAllConnections();
			server.close(() => resolve());
		}),
	};
}
