import { execFile, spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./ports";

/**
 * OpenIPMI's BMC simulator (Debian `openipmi`: ipmi_sim) holding the power of a QEMU guest: its
 * lan.conf start command runs QEMU with an `ipmi-bmc-extern` device on a chardev back to the
 * simulator, so `chassis power on/off/cycle` over IPMI-over-LAN really starts and stops the guest.
 * Everything lives in a temp dir; every process is ended by PID.
 */
export interface IpmiSim {
	address: string;
	/** UDP port of the simulated BMC's LAN channel. */
	port: number;
	user: string;
	password: string;
	/** PID of the QEMU process the simulator runs now, or null when the guest is powered off. */
	qemuPid(): number | null;
	/** The simulator's own output (for a failing test's message). */
	output(): string;
	stop(): Promise<void>;
}

export interface IpmiSimOptions {
	/** Extra QEMU arguments (devices, NICs, -boot n); the IPMI device and chardev are added here. */
	qemuArgs?: readonly string[];
	/** Run the simulator (and so its QEMU) inside this network namespace (`ip netns exec`). */
	netns?: string;
	/** UDP port of the LAN channel. */
	port: number;
	/** Address the LAN channel listens on (an address in the namespace when `netns` is given). */
	address?: string;
	/** TCP port (on 127.0.0.1 where the simulator runs) of the simulator ↔ QEMU chardev; free by default. */
	serialPort?: number;
	qemu?: string;
	/**
	 * Put before QEMU in the start command, e.g. `ip netns exec <ns>` (it execs, so QEMU keeps the
	 * PID the simulator started): a guest whose NIC is in another namespace than its BMC.
	 */
	qemuPrefix?: readonly string[];
	/**
	 * QEMU reaches the simulator through this unix socket instead of 127.0.0.1:serialPort (a QEMU in
	 * another network namespace cannot reach the simulator's loopback; the caller relays the socket
	 * to serialPort inside the simulator's namespace).
	 */
	chardevPath?: string;
	user?: string;
	password?: string;
}

const READY_MS = 20_000;
const STOP_MS = 10_000;

/** Characters that would break the lan.conf string or the `sh -c` ipmi_sim runs the start command with. */
const UNQUOTABLE = /['"\\\n]/;

export async function startIpmiSim(options: IpmiSimOptions): Promise<IpmiSim> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ipmi-sim-"));
	const address = options.address ?? "127.0.0.1";
	const user = options.user ?? "admin";
	const password = options.password ?? `pw-${Math.random().toString(36).slice(2, 12)}`;
	const serialPort = options.serialPort ?? (await freePort());
	const chardev = options.chardevPath ? `socket,id=ipmi0,path=${options.chardevPath},reconnect=10` : `socket,id=ipmi0,host=127.0.0.1,port=${serialPort},reconnect=10`;
	const qemu = [
		...(options.qemuPrefix ?? []),
		options.qemu ?? "qemu-system-x86_64",
		...["-display", "none", "-nodefaults", "-no-user-config", "-m", "64"],
		...["-chardev", chardev],
		...["-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0", "-device", "isa-ipmi-kcs,bmc=bmc0"],
		...(options.qemuArgs ?? []),
	];
	const bad = qemu.find((arg) => UNQUOTABLE.test(arg));
	if (bad) throw new Error(`QEMU argument cannot be quoted for ipmi_sim's start command: ${bad}`);
	fs.writeFileSync(path.join(dir, "lan.conf"), lanConf({ address, port: options.port, serialPort, user, password, startCommand: qemu.map((arg) => `'${arg}'`).join(" ") }), { mode: 0o600 });
	fs.writeFileSync(path.join(dir, "emu.cmds"), EMU_COMMANDS);
	fs.mkdirSync(path.join(dir, "state"));

	const simArgs = ["-c", path.join(dir, "lan.conf"), "-f", path.join(dir, "emu.cmds"), "-s", path.join(dir, "state"), "-n"];
	// `ip netns exec` execs the program, so the PID spawned is the simulator's own.
	const child = options.netns ? spawn("ip", ["netns", "exec", options.netns, "ipmi_sim", ...simArgs], { stdio: ["ignore", "pipe", "pipe"] }) : spawn("ipmi_sim", simArgs, { stdio: ["ignore", "pipe", "pipe"] });
	let output = "";
	child.stdout?.on("data", (chunk) => (output += chunk));
	child.stderr?.on("data", (chunk) => (output += chunk));
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

	const sim: IpmiSim = {
		address,
		port: options.port,
		user,
		password,
		qemuPid: () => childPids(child.pid!).find((pid) => commandLine(pid).some((arg) => arg.startsWith("ipmi-bmc-extern"))) ?? null,
		output: () => output,
		stop: async () => {
			await stopSim(child, exited, sim.qemuPid());
			fs.rmSync(dir, { recursive: true, force: true });
		},
	};
	try {
		await waitUntilAnswering(sim, options.netns, child);
	} catch (err) {
		await sim.stop();
		throw err;
	}
	return sim;
}

function lanConf(c: { address: string; port: number; serialPort: number; user: string; password: string; startCommand: string }): string {
	const auths = "none md2 md5 straight";
	return [
		'name "ipmisim"',
		"set_working_mc 0x20",
		"startlan 1",
		`  addr ${c.address} ${c.port}`,
		"  priv_limit admin",
		`  allowed_auths_callback ${auths}`,
		`  allowed_auths_user ${auths}`,
		`  allowed_auths_operator ${auths}`,
		`  allowed_auths_admin ${auths}`,
		"  guid a123456789abcdefa123456789abcdef",
		"endlan",
		`serial kcs 127.0.0.1 ${c.serialPort} codec VM`,
		// ipmi_sim runs this with `sh -c "exec …"`: every argument is single-quoted.
		`startcmd "${c.startCommand}"`,
		"startnow false",
		// A guest with no OS never acknowledges a graceful power-off request: SIGTERM it soon.
		"poweroff_wait 2",
		"kill_wait 5",
		`user 2 true "${c.user}" "${c.password}" admin 10 ${auths}`,
		"",
	].join("\n");
}

const EMU_COMMANDS = ["mc_setbmc 0x20", "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr", "sel_enable 0x20 1000 0x0a", "mc_enable 0x20", ""].join("\n");

/** A free UDP port on 127.0.0.1 (the LAN channel is UDP; ports.ts finds TCP ones). */
export function freeUdpPort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const socket = dgram.createSocket("udp4");
		socket.once("error", reject);
		socket.bind(0, "127.0.0.1", () => {
			const { port } = socket.address();
			socket.close(() => resolve(port));
		});
	});
}

/** Bounded: the simulator answers `chassis power status` over its LAN channel, or the start failed. */
async function waitUntilAnswering(sim: IpmiSim, netns: string | undefined, child: ChildProcess): Promise<void> {
	const deadline = Date.now() + READY_MS;
	const ipmitool = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", sim.address, "-p", String(sim.port), "-U", sim.user, "-E", "-N", "1", "-R", "1", "chassis", "power", "status"];
	const [command, ...args] = netns ? ["ip", "netns", "exec", netns, ...ipmitool] : ipmitool;
	while (Date.now() < deadline) {
		if (child.exitCode !== null || child.signalCode !== null) throw new Error(`ipmi_sim exited at start: ${sim.output().trim()}`);
		if (/Chassis Power is/.test(await probe(command!, args, sim.password))) return;
		await new Promise((resolve) => setTimeout(resolve, 200));
	}
	throw new Error(`ipmi_sim did not answer on ${sim.address}:${sim.port} within ${READY_MS} ms: ${sim.output().trim()}`);
}

/** ipmitool's output, or "" when it failed; killed after 5 s. */
function probe(command: string, args: readonly string[], password: string): Promise<string> {
	return new Promise((resolve) => {
		execFile(command, args, { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", IPMI_PASSWORD: password }, timeout: 5_000, encoding: "utf8" }, (error, stdout) => resolve(error ? "" : stdout));
	});
}

/** The guest first (the simulator leaves its VM running when it ends), then the simulator. */
async function stopSim(child: ChildProcess, exited: Promise<void>, qemuPid: number | null): Promise<void> {
	if (qemuPid !== null) await endPid(qemuPid);
	if (child.exitCode !== null || child.signalCode !== null) return;
	const timer = setTimeout(() => child.kill("SIGKILL"), STOP_MS);
	child.kill("SIGTERM");
	await exited;
	clearTimeout(timer);
}

async function endPid(pid: number): Promise<void> {
	signal(pid, "SIGTERM");
	const deadline = Date.now() + STOP_MS;
	while (isRunning(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
	if (isRunning(pid)) signal(pid, "SIGKILL");
}

function signal(pid: number, name: NodeJS.Signals): void {
	try {
		process.kill(pid, name);
	} catch {
		// already gone
	}
}

/** Running and not a zombie waiting for its parent to reap it. */
export function isRunning(pid: number): boolean {
	try {
		const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
		return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
	} catch {
		return false;
	}
}

/** Live children of a process, from /proc (the fields after the command name: state, then parent PID). */
function childPids(parent: number): number[] {
	const pids: number[] = [];
	for (const entry of fs.readdirSync("/proc")) {
		if (!/^\d+$/.test(entry)) continue;
		try {
			const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
			const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
			if (Number(ppid) === parent && state !== "Z") pids.push(Number(entry));
		} catch {
			// ended while we looked
		}
	}
	return pids;
}

export function commandLine(pid: number): string[] {
	try {
		return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
	} catch {
		return [];
	}
}
