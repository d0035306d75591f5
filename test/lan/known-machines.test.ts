import { type ChildProcess } from "node:child_process";
import path from "node:path";
import { BmcError, createBmc, siteNodeId } from "@clusterplatform/core";
import { isRunning } from "../support/ipmi-sim";
import { eventually } from "../support/ports";
import { describeIf, itIf, missingFile, missingProgram } from "../support/requirements";
import { startLab, type Lab } from "./support/lab";
import { canMakeNamespaces, stopChild, type Lan } from "./support/netns";
import { pxeProbe, type PxeProbeResult } from "./support/peers";
import { startManagedGuest, type ManagedGuest } from "./support/managed-guest";
import { FIRMWARE_FILES } from "./support/qemu";
import { spawnDistributor } from "./support/site";
import { cloudKernel } from "./support/tiny-linux";

/**
 * Known-machines-only on a real (namespaced) LAN: a distributor worker process with its dnsmasq
 * (proxy DHCP) and UEFI HTTP boot answerer, the provisioner with the machines service, and PXE /
 * HTTP boot DISCOVERs sent from a MAC of the test's choosing. Off (the seed's default), everyone
 * is answered; on, only the MACs of the site's machines, following /api/machines as it changes,
 * without the distributor process restarting. Then a guest whose power a BMC holds (ipmi_sim in the
 * distributor's namespace) is powered on and off through the site's distributor.
 */
const SITE = "known.sites.example";
const BIOS_IPXE = "/usr/lib/ipxe/undionly.kpxe";
const UEFI_IPXE = "/usr/lib/ipxe/ipxe.efi";
const KNOWN = "52:54:00:4b:00:01";
const STRANGER = "52:54:00:4b:00:02";
const LATECOMER = "52:54:00:4b:00:03";
const MANAGED = "52:54:00:4b:00:10";

function missing(): string | null {
	// The lab builds its tiny Linux node at start (cpio, busybox, dropbear, a Debian cloud kernel).
	return canMakeNamespaces() ?? missingProgram(["dnsmasq", "nats-server", "cpio", "busybox", "dropbear"]) ?? missingFile([BIOS_IPXE, UEFI_IPXE]) ?? (cloudKernel() ? null : "no Debian cloud kernel in /boot");
}

describeIf(missing(), "a distributor answering known machines only", () => {
	let lab: Lab;
	let lan: Lan;
	let distributor: { child: ChildProcess; log(): string };
	let distributorId: number;
	let seedBody: Record<string, unknown>;
	let mainscript: { id: number; url: string };
	const guests: ManagedGuest[] = [];

	/** Whether the distributor answered a DISCOVER from `mac`: PXE firmware (proxy + port 4011), iPXE, and UEFI HTTP boot (arch 16). */
	async function answered(mac: string): Promise<{ firmware: boolean; ipxe: boolean; http: boolean }> {
		const fromDistributor = (result: PxeProbeResult) => result.answers.some((a) => a.from === lan.distributorIp);
		const firmware = await pxeProbe(lan, 7, "firmware", 1500, mac);
		const ipxe = await pxeProbe(lan, 0, "ipxe", 1500, mac);
		const http = await pxeProbe(lan, 16, "http", 1500, mac);
		// The router answers every DISCOVER: the probe itself worked.
		for (const result of [firmware, ipxe, http]) expect(result.answers.some((a) => a.from === lan.routerIp)).toBe(true);
		return { firmware: fromDistributor(firmware) && firmware.bootServerAnswer?.file === "ipxe.efi", ipxe: fromDistributor(ipxe), http: fromDistributor(http) };
	}
	const everything = { firmware: true, ipxe: true, http: true };
	const nothing = { firmware: false, ipxe: false, http: false };
	const configure = async (body: Record<string, unknown>) => {
		const res = await lab.api(`/distributors/${distributorId}`, { method: "PUT", json: body });
		const answer = await res.json();
		expect({ status: res.status, answer }).toMatchObject({ status: 200 });
		return answer;
	};
	const addMachine = async (name: string, mac: string) => {
		const res = await lab.api("/machines", { method: "POST", json: { name, macs: [mac], artifactId: SITE } });
		expect(res.status).toBe(201);
		return (await res.json()) as { id: number };
	};

	beforeAll(async () => {
		lab = await startLab({ name: "known-machines", services: ["gateway", "sshkey", "mainscripts", "distributors", "machines", "boots"] });
		lan = lab.lan;
		const [biosUrl, uefiUrl] = (await Promise.all([lab.store.putFile("boot/undionly.kpxe", BIOS_IPXE), lab.store.putFile("boot/ipxe.efi", UEFI_IPXE)])).map((file) => file.url);
		mainscript = await lab.create("mainscripts", "#!ipxe\necho managed guest reached its mainscript\nexit\n");
		const nodeId = `known-distributor-${process.pid}`;
		distributor = spawnDistributor(lan, { transporter: lab.bus.env.TRANSPORTER!, site: SITE, publicUrl: lab.base, dataDir: path.join(lab.dir, "distributor"), nodeId });
		distributorId = (await lab.distributorOnline(SITE, siteNodeId(SITE, nodeId), distributor.log)).id;
		// The seed's body, unchanged: no knownMachinesOnly.
		seedBody = { ipxePxeUefiUrl: uefiUrl, ipxePxeBiosUrl: biosUrl, artifactId: 1, device: lan.device, range: lan.routerIp, scriptUrl: mainscript.url };
		expect(await configure(seedBody)).toMatchObject({ knownMachinesOnly: false });
		const on = await lab.api(`/distributors/${distributorId}/status`, { method: "PUT", json: { on: true, artifactId: 1 } });
		expect(await on.json()).toMatchObject({ on: true, state: "on" });
		await addMachine("known-1", KNOWN);
	}, 180_000);

	afterAll(async () => {
		for (const guest of guests) await guest.stop();
		await stopChild(distributor?.child);
		await lab?.stop();
	}, 60_000);

	it("answers a known and an unknown MAC alike while the mode is off (the seed's default)", async () => {
		expect(await answered(KNOWN)).toEqual(everything);
		expect(await answered(STRANGER)).toEqual(everything);
	}, 60_000);

	it("switched on, answers only the site's machines: PXE firmware, iPXE and UEFI HTTP boot", async () => {
		expect(await configure({ ...seedBody, knownMachinesOnly: true })).toMatchObject({ knownMachinesOnly: true, on: true, state: "on" });
		const status = await lab.provisioner.broker.call<{ knownMacs: number; settings: { knownMachinesOnly: boolean } }, object>("distributor-worker.status", {}, { nodeID: siteNodeId(SITE, `known-distributor-${process.pid}`) });
		expect(status).toMatchObject({ knownMacs: 1, settings: { knownMachinesOnly: true } });
		expect(await answered(KNOWN)).toEqual(everything);
		expect(await answered(STRANGER)).toEqual(nothing);
	}, 60_000);

	it("follows /api/machines: a machine added is answered, one removed is not, with the same distributor process", async () => {
		const pid = distributor.child.pid;
		expect(await answered(LATECOMER)).toEqual(nothing);
		const latecomer = await addMachine("latecomer", LATECOMER);
		await eventually(async () => ((await answered(LATECOMER)).firmware ? true : undefined), 30_000, "the added machine's MAC answered");
		expect(await answered(LATECOMER)).toEqual(everything);
		expect(await answered(STRANGER)).toEqual(nothing);

		expect((await lab.api(`/machines/${latecomer.id}`, { method: "DELETE" })).status).toBe(200);
		await eventually(async () => ((await answered(LATECOMER)).firmware ? undefined : true), 30_000, "the removed machine's MAC ignored");
		expect(await answered(LATECOMER)).toEqual(nothing);
		expect(await answered(KNOWN)).toEqual(everything);
		expect(distributor.child.pid).toBe(pid);
		expect(distributor.child.exitCode).toBeNull();
	}, 120_000);

	it("with the seed's body again (no knownMachinesOnly), answers everyone", async () => {
		expect(await configure(seedBody)).toMatchObject({ knownMachinesOnly: false });
		expect(await answered(STRANGER)).toEqual(everything);
	}, 60_000);

	itIf(missingProgram(["ipmi_sim", "ipmitool", "qemu-system-x86_64"]) ?? missingFile(FIRMWARE_FILES.bios), "powers a BMC-held guest on through distributors.bmc: it PXE-boots to its mainscript; powered off, its QEMU is gone", async () => {
		const guest = await startManagedGuest(lan, { firmware: "bios", mac: MANAGED, tap: "tbmc", dir: lab.dir, name: "managed" });
		guests.push(guest);
		// The BMC listens in the distributor's namespace only: from the host its address is silent.
		const fromHost = await createBmc(guest.bmc, { cipherSuite: 3, timeoutMs: 3000 }).power("status").catch((err: unknown) => err);
		expect(fromHost).toBeInstanceOf(BmcError);
		expect(fromHost).toMatchObject({ reason: "timeout" });

		const bmc = (action: string) => lab.provisioner.broker.call<{ power: string }, object>("distributors.bmc", { artifactId: SITE, ...guest.bmc, cipherSuite: 3, action });
		expect(await bmc("status")).toMatchObject({ power: "off" });
		expect(guest.qemuPid()).toBeNull();
		const since = Date.now();
		expect(await bmc("on")).toMatchObject({ power: "on" });
		const pid = await eventually(() => guest.qemuPid() ?? undefined, 20_000, "QEMU started by power on");
		// Network boot first: the NIC's iPXE gets the script URL from the distributor and asks the gateway for it.
		const fetched = await eventually(async () => {
			const page = await lab.json(`/boots?search=${encodeURIComponent(`/api/mainscripts/${mainscript.id} `)}&searchFields=detail&sort=-id&pageSize=50`);
			return (page.rows as { kind: string; at: string; detail: string }[]).find((e) => e.kind === "script" && Date.parse(e.at) >= since);
		}, 180_000, "the managed guest's mainscript request at the gateway").catch((err: Error) => {
			throw new Error(`${err.message}\n--- serial ---\n${guest.serial().slice(-3000)}`);
		});
		expect(fetched.detail).toContain(`GET /api/mainscripts/${mainscript.id} `);

		expect(await bmc("off")).toMatchObject({ power: "off" });
		await eventually(() => !isRunning(pid) || undefined, 30_000, "QEMU ended by power off");
		expect(guest.qemuPid()).toBeNull();
	}, 300_000);
});
