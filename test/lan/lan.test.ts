import { type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { siteNodeId } from "@clusterplatform/core";
import { eventually } from "../support/ports";
import { describeIf, missingFile, missingProgram } from "../support/requirements";
import { startLab, type Lab } from "./support/lab";
import { canMakeNamespaces, stopChild, type Lan } from "./support/netns";
import { tftpGet, pxeProbe } from "./support/peers";
import { bootGuest, OVMF_CODE, type Firmware, type Guest } from "./support/qemu";
import { spawnDistributor } from "./support/site";
import { cloudKernel } from "./support/tiny-linux";

/**
 * The whole site side on a real (namespaced) LAN: a router with its own DHCP server, a
 * distributor worker process in its own namespace talking NATS to the provisioner, and QEMU
 * machines that PXE-boot from the distributor's dnsmasq, run a tiny Linux, register as
 * localnodes and run scripts over SSH from the distributor.
 */
const SITE = "felicitas.pojtinger.swabia.sol";
const BIOS_IPXE = "/usr/lib/ipxe/undionly.kpxe";
const UEFI_IPXE = "/usr/lib/ipxe/ipxe.efi";
const REQUIRED = ["dnsmasq", "qemu-system-x86_64", "nats-server", "cpio", "busybox", "dropbear"];
/** Upper bound of one machine's life; QEMU is killed by `timeout` even if the test dies. */
const GUEST_SECONDS = 300;
const BOOT_TIMEOUT_MS = 240_000;

function missing(): string | null {
	return canMakeNamespaces() ?? missingProgram(REQUIRED) ?? missingFile([BIOS_IPXE, UEFI_IPXE, OVMF_CODE]) ?? (cloudKernel() ? null : "no Debian cloud kernel in /boot");
}

describeIf(missing(), "a site LAN in network namespaces", () => {
	let lab: Lab;
	let lan: Lan;
	let dir: string;
	let keys: Lab["keys"];
	let tiny: Lab["tiny"];
	let api: Lab["api"];
	let json: Lab["json"];
	let provisioner: Lab["provisioner"];
	let distributor: { child: ChildProcess; log(): string };
	let distributorId: number;
	let mainscriptUrl: string;
	let biosUrl: string;
	let uefiUrl: string;
	const guests: Guest[] = [];
	const timings: Record<string, number> = {};

	beforeAll(async () => {
		const started = Date.now();
		lab = await startLab({
			name: "lan",
			services: ["gateway", "mainscripts", "subscripts", "postbootscripts", "sshkeys", "sshkey", "localnodes", "scriptruns", "distributors", "boots"],
		});
		({ lan, dir, keys, tiny, api, json, provisioner } = lab);
		[biosUrl, uefiUrl] = (await Promise.all([lab.store.putFile("boot/undionly.kpxe", BIOS_IPXE), lab.store.putFile("boot/ipxe.efi", UEFI_IPXE)])).map((file) => file.url);
		const { subscript } = await lab.nodeChain(SITE);
		mainscriptUrl = (await lab.create("mainscripts", `#!ipxe\nchain ${subscript}\n`)).url;
		const nodeId = `lan-distributor-${process.pid}`;
		distributor = spawnDistributor(lan, { transporter: lab.bus.env.TRANSPORTER, site: SITE, publicUrl: lab.base, dataDir: path.join(dir, "distributor"), nodeId });
		distributorId = (await lab.distributorOnline(SITE, siteNodeId(SITE, nodeId), distributor.log)).id;
		timings.setupMs = Date.now() - started;
	}, 180_000);

	afterAll(async () => {
		for (const guest of guests) await stopChild(guest.child, "SIGTERM", 2000);
		await stopChild(distributor?.child);
		await lab?.stop();
		console.log(`test/lan timings (ms): ${JSON.stringify(timings)}`);
	}, 60_000);

	it("configures and switches on the distributor with the seed's request bodies", async () => {
		const res = await api(`/distributors/${distributorId}`, {
			method: "PUT",
			json: { ipxePxeUefiUrl: uefiUrl, ipxePxeBiosUrl: biosUrl, artifactId: 1, device: lan.device, range: lan.routerIp, scriptUrl: mainscriptUrl },
		});
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ device: lan.device, range: lan.routerIp, scriptUrl: mainscriptUrl, on: false });
		const on = await api(`/distributors/${distributorId}/status`, { method: "PUT", json: { on: true, artifactId: 1 } });
		expect(on.status).toBe(200);
		expect(await on.json()).toMatchObject({ on: true, state: "on" });
		expect(await json(`/distributors/${distributorId}`)).toMatchObject({ on: true, state: "on", online: true });
	});

	it("serves both iPXE binaries from the distributor's TFTP root (npm tftp client against dnsmasq)", async () => {
		expect((await tftpGet(lan.distributorIp, "undionly.kpxe")).equals(fs.readFileSync(BIOS_IPXE))).toBe(true);
		expect((await tftpGet(lan.distributorIp, "ipxe.efi")).equals(fs.readFileSync(UEFI_IPXE))).toBe(true);
		await expect(tftpGet(lan.distributorIp, "no-such-file")).rejects.toThrow(/not found|exist/i);
	});

	it.each([
		[0, "BIOS", "undionly.kpxe"],
		[7, "UEFI x64", "ipxe.efi"],
		[9, "UEFI x64 (EBC id)", "ipxe.efi"],
	])("answers a PXE DISCOVER of arch %i (%s) by proxy DHCP next to the router's offer, and names %s on port 4011", async (arch, _label, file) => {
		const { answers, bootServerAnswer } = await pxeProbe(lan, arch, "firmware");
		const offer = answers.find((a) => a.from === lan.routerIp);
		const proxy = answers.find((a) => a.from === lan.distributorIp);
		expect(offer?.yiaddr).toMatch(new RegExp(`^${lan.prefix.replace(/\./g, "\\.")}\\.1\\d\\d$`));
		// Proxy DHCP hands out no address, only boot information.
		expect(proxy).toMatchObject({ yiaddr: "0.0.0.0", vendorClass: "PXEClient", serverId: lan.distributorIp });
		expect(bootServerAnswer).toMatchObject({ from: lan.distributorIp, file });
	});

	it("gives a client already running iPXE the script URL instead of iPXE again", async () => {
		const { answers, bootServerAnswer } = await pxeProbe(lan, 0, "ipxe");
		const proxy = answers.find((a) => a.from === lan.distributorIp);
		expect(proxy).toBeDefined();
		expect(`${proxy!.file} ${bootServerAnswer?.file}`).toContain(mainscriptUrl);
	});

	// A site's process has its site in its node ID (core/bus.ts).
	const distributorNode = siteNodeId(SITE, `lan-distributor-${process.pid}`);
	/** The operator's step before a node's first script: compare the key it presents, accept it. */
	const acceptHostKey = async (id: number) => {
		const { recorded, presented } = await json(`/localnodes/${id}/hostkey`);
		expect(recorded).toBeNull();
		expect(presented).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
		expect((await api(`/localnodes/${id}/hostkey`, { method: "PUT", json: { hostKey: presented } })).status).toBe(200);
	};
	const bootAndRegister = async (firmware: Firmware, mac: string) => {
		const tap = `t${firmware}`;
		lan.addTap(tap);
		const started = Date.now();
		const guest = bootGuest(lan, { firmware, tap, mac, dir, maxSeconds: GUEST_SECONDS });
		guests.push(guest);
		const address = await eventually(() => /CPP: address (\S+)/.exec(guest.serial())?.[1], BOOT_TIMEOUT_MS, `${firmware} guest address`).catch((err: Error) => {
			throw new Error(`${err.message}\n--- serial ---\n${guest.serial().slice(-3000)}`);
		});
		timings[`${firmware}KernelUpMs`] = Date.now() - started;
		const node = await eventually(async () => {
			const page = await json(`/localnodes?search=${address}&searchFields=ip`);
			return page.rows.find((r: { ip: string }) => r.ip === address);
		}, 60_000, `${firmware} guest registered`).catch((err: Error) => {
			throw new Error(`${err.message}\n--- serial ---\n${guest.serial().slice(-3000)}`);
		});
		timings[`${firmware}RegisteredMs`] = Date.now() - started;
		expect(node).toMatchObject({ artifactId: SITE, pingable: true });
		return { guest, node: node as { id: number; ip: string } };
	};

	it("PXE-boots a BIOS machine to a registered localnode and runs scripts on it over SSH", async () => {
		const { node } = await bootAndRegister("bios", "52:54:00:c0:01:01");
		// QEMU's NIC boot ROM is itself iPXE, so it takes the script URL directly; TFTP is seen only if it asks.
		const status = await provisioner.broker.call<{ recentLog: string[] }, object>("distributor-worker.status", {}, { nodeID: distributorNode });
		console.log(`BIOS boot path: ${status.recentLog.some((l) => new RegExp(`undionly\\.kpxe to ${lan.prefix.replace(/\./g, "\\.")}\\.1\\d\\d`).test(l)) ? "firmware PXE -> TFTP undionly.kpxe -> script" : "iPXE ROM -> script URL from proxy DHCP"}`);
		// The background check from the distributor sees its SSH port.
		await eventually(async () => (await json(`/localnodes/${node.id}`)).reachable === true, 30_000, "reachable");
		// No script goes to a node whose host key nobody accepted.
		const unaccepted = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "true", privateKey: keys.privateKey } });
		expect(unaccepted.status).toBe(409);
		await acceptHostKey(node.id);

		const res = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "uname -r\necho to-stderr >&2\nexit 3\n", privateKey: keys.privateKey } });
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ code: 3, stdout: `${tiny.release}\n`, stderr: "to-stderr\n" });
		const recorded = await json(`/localnodes/${node.id}`);
		expect(recorded.hostKey).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);

		// The seed's body has only the script: the site's stored private key is used.
		expect((await api("/sshkeys", { method: "POST", json: { text: keys.privateKey, artifactId: SITE, private: true } })).status).toBe(201);
		const seedStyle = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "cat /proc/sys/kernel/hostname; id -u" } });
		expect(seedStyle.status).toBe(200);
		expect((await seedStyle.json()).stdout).toMatch(/\n0\n$/);

		const started = Date.now();
		const slow = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "sleep 60", privateKey: keys.privateKey, timeout: 2 } });
		expect(slow.status).toBe(504);
		expect(Date.now() - started).toBeLessThan(20_000);

		// A new host key on the same node (as after a reinstall, or an impostor) is refused.
		const rekey = await api(`/localnodes/${node.id}/script`, {
			method: "PUT",
			json: { script: "rm -f /etc/dropbear/dropbear_*_host_key\n(sleep 1; killall dropbear; dropbear -R -E -p 22 -s) >/dev/null 2>&1 &\necho ok\n", privateKey: keys.privateKey },
		});
		expect(rekey.status).toBe(200);
		const changed = await eventually(async () => {
			const attempt = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "echo hi", privateKey: keys.privateKey, timeout: 10 } });
			return attempt.status === 409 ? attempt.json() : undefined;
		}, 30_000, "host key change refused");
		expect(changed.message).toMatch(/host key of .* changed/);

		// Every run above is in the audit log: who, which node, how it ended; never the script itself.
		const audit = (await json(`/scriptruns?search=${node.ip}&searchFields=ip&sort=id&pageSize=100`)).rows;
		expect(audit.length).toBeGreaterThanOrEqual(5);
		expect(audit[0]).toMatchObject({ localnodeId: node.id, ip: node.ip, artifactId: SITE, status: "done", code: 3, caller: expect.any(String), finishedAt: expect.any(String) });
		expect(audit.some((run: { status: string; error: string }) => run.status === "failed" && /did not finish within/.test(run.error))).toBe(true);
		expect(audit.some((run: { status: string; error: string }) => run.status === "failed" && /host key/.test(run.error))).toBe(true);
		expect(JSON.stringify(audit)).not.toContain("uname -r");
	}, BOOT_TIMEOUT_MS + 120_000);

	it("PXE-boots a UEFI machine through TFTP iPXE to a registered localnode and runs a script on it", async () => {
		const { node } = await bootAndRegister("uefi", "52:54:00:c0:01:02");
		// OVMF's own PXE client fetched iPXE from the distributor's TFTP root (dnsmasq logs each transfer).
		const status = await provisioner.broker.call<{ recentLog: string[] }, object>("distributor-worker.status", {}, { nodeID: distributorNode });
		expect(status.recentLog.filter((l) => /dnsmasq-tftp/.test(l)).join("\n")).toMatch(new RegExp(`sent \\S*/ipxe\\.efi to ${lan.prefix.replace(/\./g, "\\.")}\\.1\\d\\d`));
		await acceptHostKey(node.id);
		const res = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "uname -r", privateKey: keys.privateKey } });
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ code: 0, stdout: `${tiny.release}\n` });

		// The boot timeline: the distributor's DHCP answer and TFTP transfer, then the gateway's script and registration.
		const timeline = await eventually(async () => {
			const host = await json(`/boots/hosts/${node.ip}`);
			return ["tftp", "script", "registered"].every((step) => host.steps?.includes(step)) ? host : undefined;
		}, 15_000, "boot timeline of the UEFI guest");
		console.log(`UEFI boot timeline:\n${timeline.events.map((e: { at: string; kind: string; detail: string; mac: string | null }) => `  ${e.at} ${e.kind} ${e.mac ?? ""} ${e.detail}`).join("\n")}`);
		// The TFTP transfer linked the guest's MAC (from proxy DHCP) to its address: one host, every step.
		expect(timeline.macs).toEqual(["52:54:00:c0:01:02"]);
		expect(timeline.steps).toEqual(["dhcp", "tftp", "script", "artifact", "registered"]);
		expect(timeline.events.filter((e: { kind: string }) => e.kind === "dhcp").map((e: { detail: string }) => e.detail)).toEqual(
			expect.arrayContaining(["proxy: boot ipxe.efi", `proxy: boot ${mainscriptUrl}`]),
		);
	}, BOOT_TIMEOUT_MS + 120_000);

	it("checks reachability in the background from the distributor: an address nobody answers on is unreachable", async () => {
		const ghost = `${lan.prefix}.77`;
		const started = Date.now();
		const res = await api(`/localnodes?ip=${ghost}&artifactId=${SITE}&pingable=true`, { method: "POST" });
		expect(res.status).toBe(201);
		// Registration does not wait for the check.
		expect(Date.now() - started).toBeLessThan(1000);
		const { id } = await res.json();
		const row = await eventually(async () => {
			const r = await json(`/localnodes/${id}`);
			return r.reachableCheckedAt ? r : undefined;
		}, 30_000, "reachability checked");
		expect(row.reachable).toBe(false);
	});

	it("reports a crashed dnsmasq with its exit reason and starts it again when asked", async () => {
		const dnsmasqPid = childPidsOf(distributor.child.pid!).find((pid) => commOf(pid) === "dnsmasq");
		expect(dnsmasqPid).toBeDefined();
		process.kill(dnsmasqPid!, "SIGKILL");
		const crashed = await eventually(async () => {
			const row = await json(`/distributors/${distributorId}`);
			return row.state === "crashed" ? row : undefined;
		}, 20_000, "crash reported");
		expect(crashed).toMatchObject({ on: false, state: "crashed" });
		expect(crashed.stateReason).toMatch(/SIGKILL/);
		const again = await api(`/distributors/${distributorId}/status`, { method: "PUT", json: { on: true, artifactId: 1 } });
		expect(await again.json()).toMatchObject({ on: true, state: "on" });
		expect((await tftpGet(lan.distributorIp, "undionly.kpxe")).length).toBe(fs.statSync(BIOS_IPXE).size);
	});

	it("switches dnsmasq off with the seed's status body", async () => {
		const off = await api(`/distributors/${distributorId}/status`, { method: "PUT", json: { on: false, artifactId: 1 } });
		expect(await off.json()).toMatchObject({ on: false, state: "off" });
		await expect(tftpGet(lan.distributorIp, "undionly.kpxe", 4000)).rejects.toThrow();
	});

	it("shows the distributor offline once its process is gone, and refuses commands and scripts for its site", async () => {
		await stopChild(distributor.child);
		const row = await eventually(async () => {
			const r = await json(`/distributors/${distributorId}`);
			return r.online === false ? r : undefined;
		}, 30_000, "distributor offline");
		expect(row.lastSeen).toBeTruthy();
		expect((await api(`/distributors/${distributorId}/status`, { method: "PUT", json: { on: true } })).status).toBe(503);
		const nodes = await json(`/localnodes?search=${SITE}&searchFields=artifactId`);
		const script = await api(`/localnodes/${nodes.rows[0].id}/script`, { method: "PUT", json: { script: "true", privateKey: keys.privateKey } });
		expect(script.status).toBe(503);
	});
});

function childPidsOf(parent: number): number[] {
	return fs
		.readdirSync("/proc")
		.filter((name) => /^\d+$/.test(name))
		.map(Number)
		.filter((pid) => {
			try {
				const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
				return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === parent;
			} catch {
				return false;
			}
		});
}

function commOf(pid: number): string {
	try {
		return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
	} catch {
		return "";
	}
}
