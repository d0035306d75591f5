import { type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { commandLine, isRunning, startIpmiSim, type IpmiSim } from "../../support/ipmi-sim";
import { stopChild, type Lan } from "./netns";
import { QEMU_OF, guestArgs, serialLogOf, type Firmware } from "./qemu";

/**
 * A QEMU guest on the test LAN whose power is held by a BMC: OpenIPMI's ipmi_sim runs inside the
 * distributor's network namespace, its IPMI LAN channel on 127.0.0.1 there — so only the
 * distributor's namespace reaches it, as a BMC on a site's management network — and its power-on
 * starts QEMU (network boot first) on a tap of the LAN bridge. The guest's NIC is in the bridge
 * namespace, its BMC in the distributor's: QEMU is started through `ip netns exec <bridge>` and
 * reaches the simulator's chardev through a unix socket relayed to the simulator's port inside the
 * distributor's namespace (unix sockets are not bound to a network namespace).
 */
export interface ManagedGuest {
	mac: string;
	/** The BMC as the distributor reaches it (protocol, address, port, user, password). */
	bmc: { protocol: "ipmi"; address: string; port: number; user: string; password: string };
	/** PID of the running QEMU, or null when the guest is off. */
	qemuPid(): number | null;
	serial(): string;
	stop(): Promise<void>;
}

export interface ManagedGuestOptions {
	firmware: Firmware;
	mac: string;
	/** Tap name on the LAN bridge (made here). */
	tap: string;
	dir: string;
	name: string;
}

/** In the distributor's namespace: the unix socket (argv[1]) → 127.0.0.1:argv[2], one connection each. */
const RELAY = `
const net = require("node:net");
const [socketPath, port] = process.argv.slice(1);
net.createServer((client) => {
	const upstream = net.connect(Number(port), "127.0.0.1");
	client.pipe(upstream).pipe(client);
	for (const [a, b] of [[client, upstream], [upstream, client]]) { a.on("error", () => b.destroy()); a.on("close", () => b.destroy()); }
}).listen(socketPath, () => console.log("relaying"));
`;

/** The BMC's UDP port: IPMI's own, free in a namespace of the test's. */
const IPMI_PORT = 623;
/** TCP port of the simulator's chardev inside the distributor's namespace. */
const SERIAL_PORT = 9002;

export async function startManagedGuest(lan: Lan, options: ManagedGuestOptions): Promise<ManagedGuest> {
	lan.addTap(options.tap);
	const serialLog = serialLogOf(options);
	fs.writeFileSync(serialLog, "");
	const socketPath = path.join(options.dir, `${options.name}-bmc.sock`);
	const relay = await startRelay(lan, socketPath);
	let sim: IpmiSim;
	try {
		sim = await startIpmiSim({
			netns: lan.ns.distributor,
			address: "127.0.0.1",
			port: IPMI_PORT,
			serialPort: SERIAL_PORT,
			chardevPath: socketPath,
			qemu: QEMU_OF[options.firmware],
			qemuPrefix: ["ip", "netns", "exec", lan.ns.bridge],
			qemuArgs: guestArgs({ firmware: options.firmware, tap: options.tap, mac: options.mac, dir: options.dir, name: options.name }, serialLog),
		});
	} catch (err) {
		await stopChild(relay);
		throw err;
	}
	return {
		mac: options.mac,
		bmc: { protocol: "ipmi", address: sim.address, port: sim.port, user: sim.user, password: sim.password },
		qemuPid: () => {
			const pid = sim.qemuPid();
			// The simulator's child is QEMU itself (`ip netns exec` execs it) — checked, not assumed.
			return pid !== null && isRunning(pid) && commandLine(pid).some((arg) => arg.includes(serialLog)) ? pid : null;
		},
		serial: () => fs.readFileSync(serialLog, "utf8"),
		stop: async () => {
			await sim.stop();
			await stopChild(relay);
		},
	};
}

/** The relay, once it listens (bounded: 15 s). */
async function startRelay(lan: Lan, socketPath: string): Promise<ChildProcess> {
	fs.rmSync(socketPath, { force: true });
	const child = lan.spawnIn(lan.ns.distributor, process.execPath, ["-e", RELAY, socketPath, String(SERIAL_PORT)], { stdio: ["ignore", "pipe", "pipe"] });
	let output = "";
	child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
	child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
	const deadline = Date.now() + 15_000;
	while (!output.includes("relaying")) {
		if (child.exitCode !== null || Date.now() > deadline) {
			await stopChild(child);
			throw new Error(`the BMC chardev relay did not start: ${output}`);
		}
		await new Promise((resolve) => setTimeout(resolve, 100));
	}
	return child;
}
