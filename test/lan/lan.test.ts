import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { siteNodeId, storeFor } from "@clusterplatform/core";
import { eventually, freePort, waitForPort } from "../support/ports";
import { describeIf, missingFile, missingProgram } from "../support/requirements";
import { ADMIN_HEADERS, startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { canMakeNamespaces, createLan, stopChild, type Lan } from "./support/netns";
import { tftpGet, pxeProbe } from "./support/peers";
import { startRouter } from "./support/router";
import { bootGuest, OVMF_CODE, type Firmware, type Guest } from "./support/qemu";
import { buildTinyLinux, cloudKernel, type TinyLinux } from "./support/tiny-linux";

/**
 * The whole site side on a real (namespaced) LAN: a router with its own DHCP server, a
 * distributor worker process in its own namespace talking NATS to the provisioner, and QEMU
 * machines that PXE-boot from the distributor's dnsmasq, run a tiny Linux, register as
 * localnodes and run scripts over SSH from the distributor.
 */
const SITE = "felicitas.pojtinger.swabia.sol";
const ROOT = path.resolve(__dirname, "../..");
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
	let dir: string;
	let lan: Lan;
	let router: ChildProcess;
	let nats: ChildProcess;
	let distributor: ChildProcess;
	let distributorLog = "";
	let provisioner: TestProvisioner;
	let base: string;
	let tiny: TinyLinux;
	let keys: { publicKey: string; privateKey: string };
	let distributorId: number;
	let mainscriptUrl: string;
	const guests: Guest[] = [];
	const timings: Record<string, number> = {};

	const api = (pathname: string, init: { method?: string; json?: unknown } = {}) =>
		fetch(`${base}/api${pathname}`, {
			method: init.method ?? "GET",
			// The operator holds a token; the booting guests below send none (the machine path).
			headers: { ...ADMIN_HEADERS, ...(init.json === undefined ? {} : { "Content-Type": "application/json" }) },
			body: init.json === undefined ? undefined : JSON.stringify(init.json),
		});
	const json = async (pathname: string) => (await api(pathname)).json();

	beforeAll(async () => {
		const started = Date.now();
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-lan-"));
		lan = createLan();
		router = startRouter(lan, dir);

		const natsPort = await freePort();
		nats = spawn("nats-server", ["-a", lan.hostIp, "-p", String(natsPort)], { stdio: "ignore" });
		await waitForPort(natsPort, 15_000, lan.hostIp);
		const transporter = `nats://${lan.hostIp}:${natsPort}`;

		const port = await freePort();
		base = `http://${lan.hostIp}:${port}`;
		provisioner = await startTestProvisioner({
			services: ["gateway", "mainscripts", "subscripts", "postbootscripts", "sshkeys", "sshkey", "localnodes", "scriptruns", "distributors", "boots"],
			env: { HOST: lan.hostIp, PORT: String(port), PUBLIC_URL: base, TRANSPORTER: transporter },
		});

		keys = await json("/sshkey");
		tiny = buildTinyLinux(path.join(dir, "tiny"), keys.publicKey);
		const store = storeFor(provisioner.config);
		const [bios, uefi, kernel, initrd] = await Promise.all([
			store.putFile("boot/undionly.kpxe", BIOS_IPXE),
			store.putFile("boot/ipxe.efi", UEFI_IPXE),
			store.putFile("node/vmlinuz", tiny.kernel),
			store.putFile("node/initrd.cpio.gz", tiny.initrd),
		]);
		const create = async (registry: string, text: string) => {
			const res = await api(`/${registry}`, { method: "POST", json: { text } });
			expect(res.status).toBe(201);
			return `${base}/api/${registry}/${(await res.json()).id}`;
		};
		// The seed's post-boot script, in busybox dialect: find the address, register the node.
		const postboot = await create(
			"postbootscripts",
			`#!/bin/sh\nip=$(ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p' | head -n 1)\nwget -q -O - --post-data '' "${base}/api/localnodes?ip=\${ip}&artifactId=${SITE}&pingable=true"\n`,
		);
		const subscript = await create("subscripts", `#!ipxe\nkernel ${kernel.url} initrd=initrd.cpio.gz console=ttyS0 cpp.post=${postboot}\ninitrd ${initrd.url}\nboot\n`);
		mainscriptUrl = await create("mainscripts", `#!ipxe\nchain ${subscript}\n`);
		(globalThis as { __biosUrl?: string }).__biosUrl = bios.url;
		(globalThis as { __uefiUrl?: string }).__uefiUrl = uefi.url;

		distributor = lan.spawnIn(lan.ns.distributor, process.execPath, [path.join(__dirname, "support/run-ts.cjs"), path.join(ROOT, "packages/cli/src/main.ts"), "distributor"], {
			cwd: ROOT,
			env: {
				...process.env,
				TRANSPORTER: transporter,
				CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE,
				// The gateway's own origin: the one private address the distributor downloads iPXE from.
				PUBLIC_URL: base,
				DATA_DIR: path.join(dir, "distributor"),
				NODE_ID: `lan-distributor-${process.pid}`,
				LOG_LEVEL: "warn",
			},
			stdio: ["ignore", "pipe", "pipe"],
		});
		distributor.stdout!.on("data", (c: Buffer) => (distributorLog += c.toString()));
		distributor.stderr!.on("data", (c: Buffer) => (distributorLog += c.toString()));
		const row = await eventually(async () => {
			const page = await json(`/distributors?search=${SITE}&searchFields=artifactId`);
			return page.rows.find((r: { online: boolean; nodeID: string }) => r.online && r.nodeID === siteNodeId(SITE, `lan-distributor-${process.pid}`));
		}, 60_000, "distributor registered").catch((err: Error) => {
			throw new Error(`${err.message}\n${distributorLog}`);
		});
		distributorId = row.id;
		timings.setupMs = Date.now() - started;
	}, 180_000);

	afterAll(async () => {
		for (const guest of guests) await stopChild(guest.child, "SIGTERM", 2000);
		await stopChild(distributor);
		await provisioner?.stop();
		await stopChild(nats);
		await stopChild(router);
		lan?.destroy();
		if (dir) fs.rmSync(dir, { recursive: true, force: true });
		console.log(`test/lan timings (ms): ${JSON.stringify(timings)}`);
	}, 60_000);

	it("configures and switches on the distributor with the seed's request bodies", async () => {
		const g = globalThis as { __biosUrl?: string; __uefiUrl?: string };
		const res = await api(`/distributors/${distributorId}`, {
			method: "PUT",
			json: { ipxePxeUefiUrl: g.__uefiUrl, ipxePxeBiosUrl: g.__biosUrl, artifactId: 1, device: lan.device, range: lan.routerIp, scriptUrl: mainscriptUrl },
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
		const dnsmasqPid = childPidsOf(distributor.pid!).find((pid) => commOf(pid) === "dnsmasq");
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
		await stopChild(distributor);
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
