import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import fs from "node:fs";

export { stopChild } from "../../support/servers";

/**
 * A throwaway LAN made of network namespaces, for tests that boot machines and answer DHCP
 * without ever touching the machine's real interfaces:
 *
 *   bridge ns ─ br0 ─┬─ veth ─ router ns (10.213.N.1: the LAN's DHCP server and RA)
 *                    ├─ veth ─ distributor ns (10.213.N.2)
 *                    ├─ veth ─ client ns (10.213.N.3: protocol probes)
 *                    ├─ veth ─ host end cpph<pid> (10.213.N.254: the provisioner and NATS)
 *                    └─ tap devices for QEMU
 *
 * Every name carries the test's PID; destroy() removes all of it (and is safe to call twice).
 */
export interface Lan {
	/** "10.213.N": the LAN's /24. */
	prefix: string;
	ns: { bridge: string; router: string; distributor: string; client: string };
	hostInterface: string;
	hostIp: string;
	routerIp: string;
	distributorIp: string;
	clientIp: string;
	/** The interface name inside the router, distributor and client namespaces. */
	device: string;
	addTap(name: string): void;
	/** Start a program inside a namespace (argument array; never a shell). */
	spawnIn(ns: string, command: string, args: string[], options?: SpawnOptions): ChildProcess;
	destroy(): void;
}

export function ip(args: string[], allowFailure = false): string {
	const result = spawnSync("ip", args, { encoding: "utf8", timeout: 10_000 });
	if (result.status !== 0 && !allowFailure) throw new Error(`ip ${args.join(" ")} failed: ${result.stderr || result.error}`);
	return result.stdout;
}

/** Whether this machine can build namespaces (root, iproute2) — the LAN tests need it. */
export function canMakeNamespaces(): string | null {
	if (process.getuid?.() !== 0) return "not running as root";
	if (spawnSync("ip", ["-V"]).status !== 0) return "iproute2 (ip) is missing";
	return null;
}

/** A /24 under 10.213.0.0/16 that no route of this machine already covers. */
function freePrefix(): string {
	const routes = ip(["-4", "route", "show", "table", "all"]);
	const start = process.pid % 200;
	for (let i = 0; i < 200; i++) {
		const third = 20 + ((start + i) % 200);
		const prefix = `10.213.${third}`;
		if (!routes.includes(`${prefix}.`)) return prefix;
	}
	throw new Error("no free 10.213.x.0/24 for the test LAN");
}

function sysctl(file: string, value: string): void {
	if (fs.existsSync(file)) fs.writeFileSync(file, value);
}

/** Namespaces and host veths left by an earlier run that was killed before its cleanup (its PID is gone). */
function removeLeftovers(): void {
	const alive = (pid: string) => fs.existsSync(`/proc/${pid}`);
	for (const line of ip(["netns", "list"]).split("\n")) {
		const match = /^(cpp-(?:br|rt|ds|cl)-(\d+))\b/.exec(line);
		if (match && !alive(match[2]!)) ip(["netns", "del", match[1]!], true);
	}
	for (const match of ip(["-o", "link", "show"]).matchAll(/^\d+: (cpph(\d+))[@:]/gm)) {
		if (!alive(match[2]!)) ip(["link", "del", match[1]!], true);
	}
}

export function createLan(tag = String(process.pid)): Lan {
	removeLeftovers();
	const prefix = freePrefix();
	const ns = { bridge: `cpp-br-${tag}`, router: `cpp-rt-${tag}`, distributor: `cpp-ds-${tag}`, client: `cpp-cl-${tag}` };
	const hostInterface = `cpph${tag}`.slice(0, 15);
	const device = "eth0";
	const created: string[] = [];
	const lan: Lan = {
		prefix,
		ns,
		hostInterface,
		hostIp: `${prefix}.254`,
		routerIp: `${prefix}.1`,
		distributorIp: `${prefix}.2`,
		clientIp: `${prefix}.3`,
		device,
		addTap(name) {
			ip(["-n", ns.bridge, "tuntap", "add", "dev", name, "mode", "tap"]);
			ip(["-n", ns.bridge, "link", "set", name, "master", "br0", "up"]);
		},
		spawnIn(name, command, args, options = {}) {
			return spawn("ip", ["netns", "exec", name, command, ...args], options);
		},
		destroy() {
			for (const name of created.splice(0).reverse()) ip(["netns", "del", name], true);
			// Deleting the bridge namespace removed the host end's peer, and with it the host end.
			ip(["link", "del", hostInterface], true);
		},
	};
	try {
		for (const name of Object.values(ns)) {
			ip(["netns", "add", name]);
			created.push(name);
			ip(["-n", name, "link", "set", "lo", "up"]);
		}
		ip(["-n", ns.bridge, "link", "add", "br0", "type", "bridge", "forward_delay", "0"]);
		ip(["-n", ns.bridge, "link", "set", "br0", "up"]);
		const members: [string, string][] = [
			[ns.router, lan.routerIp],
			[ns.distributor, lan.distributorIp],
			[ns.client, lan.clientIp],
		];
		members.forEach(([member, address], i) => {
			const port = `p${i}`;
			ip(["-n", ns.bridge, "link", "add", port, "type", "veth", "peer", "name", device, "netns", member]);
			ip(["-n", ns.bridge, "link", "set", port, "master", "br0", "up"]);
			ip(["-n", member, "addr", "add", `${address}/24`, "dev", device]);
			ip(["-n", member, "link", "set", device, "up"]);
		});
		// The client sends DHCP broadcasts like a machine without an address; give them a way out.
		ip(["-n", ns.client, "route", "add", "255.255.255.255/32", "dev", device]);
		// The host end: only this test's /24, no IPv6 (the LAN's router advertisements stay in the LAN).
		ip(["link", "add", hostInterface, "type", "veth", "peer", "name", "ph", "netns", ns.bridge]);
		sysctl(`/proc/sys/net/ipv6/conf/${hostInterface}/disable_ipv6`, "1");
		sysctl(`/proc/sys/net/ipv6/conf/${hostInterface}/accept_ra`, "0");
		ip(["addr", "add", `${lan.hostIp}/24`, "dev", hostInterface]);
		ip(["link", "set", hostInterface, "up"]);
		ip(["-n", ns.bridge, "link", "set", "ph", "master", "br0", "up"]);
	} catch (err) {
		lan.destroy();
		throw err;
	}
	return lan;
}

