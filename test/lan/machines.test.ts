import { type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { siteNodeId } from "@clusterplatform/core";
import { eventually } from "../support/ports";
import { describeIf, missingFile, missingProgram } from "../support/requirements";
import { startLab, type Lab } from "./support/lab";
import { startManagedGuest, type ManagedGuest } from "./support/managed-guest";
import { canMakeNamespaces, stopChild, type Lan } from "./support/netns";
import { pxeProbe } from "./support/peers";
import { FIRMWARE_FILES, QEMU_OF, bootGuest, guestArgs, serialLogOf, type Guest } from "./support/qemu";
import { spawnDistributor } from "./support/site";
import { cloudKernel } from "./support/tiny-linux";

/**
 * Issue 15's proof on real parts, in a namespaced LAN: a distributor worker process (dnsmasq proxy
 * DHCP, Debian's prebuilt iPXE, whose script URL is the provisioner's /api/boot — that answers the
 * machine-path chain line `chain …/api/boot?mac=${net0/mac}&uuid=${uuid}&serial=…`), the provisioner
 * with the machines service, and QEMU guests (TCG). The managed guest's power is held by OpenIPMI's
 * ipmi_sim in the distributor's namespace, reachable by IPMI over LAN from there only.
 *
 *   1. two imported machines with different profiles: their plans differ, each boots its own script;
 *   2. one is provisioned from power-off to a registered node with one call, then runs a script;
 *   3. an unknown guest appears as discovered with its MAC, SMBIOS UUID and serial;
 *   4. with known-machines-only, the unknown guest gets no PXE answer;
 *   5. a wrong or replayed registration token is refused.
 */
const SITE = "machines.sites.example";
const BIOS_IPXE = "/usr/lib/ipxe/undionly.kpxe";
const UEFI_IPXE = "/usr/lib/ipxe/ipxe.efi";
const MANAGED = "52:54:00:5a:00:01";
const PLAIN = "52:54:00:5a:00:02";
const STRANGER = "52:54:00:5a:00:03";
const STRANGER_UUID = "5e1f0c2a-7d3b-4c8e-9a61-0b2c3d4e5f60";
const STRANGER_SERIAL = "CPP-SN-4711";
/** Guests are TCG: a boot to iPXE's script is ~10 s, to a registered tiny Linux ~30 s. */
const GUEST_SECONDS = 300;
const BOOT_WAIT_MS = 180_000;

function missing(): string | null {
	return (
		canMakeNamespaces() ??
		missingProgram(["dnsmasq", "nats-server", "cpio", "busybox", "dropbear", "ipmi_sim", "ipmitool", "qemu-system-x86_64"]) ??
		missingFile([BIOS_IPXE, UEFI_IPXE, ...FIRMWARE_FILES.bios]) ??
		(cloudKernel() ? null : "no Debian cloud kernel in /boot")
	);
}

/** The tiny Linux's post-boot step, as a profile template: register with this machine's token (busybox wget). */
const REGISTER_TEMPLATE = `#!/bin/sh
ip=$(ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p' | head -n 1)
wget -q -O - --post-data '' "{{registerUrl}}&ip=\${ip}&pingable=true"
`;

describeIf(missing(), "machines on a LAN: inventory, per-machine boot, provisioning through a BMC, discovery", () => {
	let lab: Lab;
	let lan: Lan;
	let distributor: { child: ChildProcess; log(): string };
	let distributorId: number;
	let seedBody: Record<string, unknown>;
	let managed: ManagedGuest;
	const guests: Guest[] = [];
	const ids: Record<string, number> = {};
	const profiles: Record<string, number> = {};

	const call = async (method: string, pathname: string, body?: unknown) => {
		const res = await lab.api(pathname, { method, json: body });
		// `any`: each step reads the fields of the answer it knows.
		return { status: res.status, body: (await res.json()) as any };
	};
	const machine = (id: number) => lab.json(`/machines/${id}`);
	const serialOf = (guest: { serial(): string }) => `\n--- serial ---\n${guest.serial().slice(-3000)}`;

	beforeAll(async () => {
		lab = await startLab({
			name: "machines",
			services: ["gateway", "sshkey", "sshkeys", "distributors", "machines", "profiles", "selectors", "localnodes", "scriptruns", "boots"],
			env: { MACHINES_PROVISION_TIMEOUT: "600" },
		});
		lan = lab.lan;
		const [biosUrl, uefiUrl, kernel, initrd] = await Promise.all([
			lab.store.putFile("boot/undionly.kpxe", BIOS_IPXE),
			lab.store.putFile("boot/ipxe.efi", UEFI_IPXE),
			lab.store.putFile("node/vmlinuz", lab.tiny.kernel),
			lab.store.putFile("node/initrd.cpio.gz", lab.tiny.initrd),
		]);
		const nodeId = `machines-distributor-${process.pid}`;
		distributor = spawnDistributor(lan, { transporter: lab.bus.env.TRANSPORTER!, site: SITE, publicUrl: lab.base, dataDir: path.join(lab.dir, "distributor"), nodeId });
		distributorId = (await lab.distributorOnline(SITE, siteNodeId(SITE, nodeId), distributor.log)).id;
		// The seed's body; its script URL is the machine path's entry: /api/boot answers the chain line.
		seedBody = { ipxePxeUefiUrl: uefiUrl.url, ipxePxeBiosUrl: biosUrl.url, artifactId: 1, device: lan.device, range: lan.routerIp, scriptUrl: `${lab.base}/api/boot` };
		expect((await call("PUT", `/distributors/${distributorId}`, seedBody)).status).toBe(200);
		expect((await call("PUT", `/distributors/${distributorId}/status`, { on: true, artifactId: 1 })).body).toMatchObject({ on: true, state: "on" });

		// The managed guest, off; its BMC as the distributor's namespace reaches it.
		managed = await startManagedGuest(lan, { firmware: "bios", mac: MANAGED, tap: "tmgd", dir: lab.dir, name: "managed" });

		const node = await call("POST", "/profiles", {
			name: "tiny-node",
			ipxeScript: "#!ipxe\nkernel {{kernelUrl}} initrd=initrd.cpio.gz console=ttyS0 cpp.post={{postbootUrl}}\ninitrd {{initrdUrl}}\nboot\n",
			postbootScript: REGISTER_TEMPLATE,
			variables: { kernelUrl: kernel.url, initrdUrl: initrd.url },
		});
		const parked = await call("POST", "/profiles", { name: "parked", ipxeScript: "#!ipxe\necho parked machine {{name}} ({{labels.role}})\nsleep 600\n", postbootScript: REGISTER_TEMPLATE });
		expect([node.status, parked.status]).toEqual([201, 201]);
		profiles.node = node.body.id;
		profiles.parked = parked.body.id;
		for (const [name, role] of [["by-role-node", "node"], ["by-role-parked", "parked"]] as const) {
			expect((await call("POST", "/selectors", { name, profileId: profiles[role], labels: { role } })).status).toBe(201);
		}
		const { protocol, address, port, user, password } = managed.bmc;
		const imported = await call("POST", "/machines/import", {
			machines: [
				{ name: "managed-1", macs: [MANAGED], artifactId: SITE, arch: "x86_64", firmware: "bios", labels: { role: "node" }, bmcProtocol: protocol, bmcAddress: address, bmcPort: port, bmcUser: user, bmcPassword: password, bmcCipherSuite: 3 },
				{ name: "plain-1", macs: [PLAIN], artifactId: SITE, arch: "x86_64", firmware: "bios", labels: { role: "parked" } },
			],
		});
		expect(imported).toMatchObject({ status: 201, body: { created: 2 } });
		[ids.managed, ids.plain] = imported.body.ids;
	}, 300_000);

	afterAll(async () => {
		for (const guest of guests) await stopChild(guest.child);
		await managed?.stop();
		await stopChild(distributor?.child);
		await lab?.stop();
	}, 120_000);

	it("1. plans two imported machines with different profiles, and each boots its own script", async () => {
		const [managedPlan, plainPlan] = [await lab.json(`/machines/${ids.managed}/plan`), await lab.json(`/machines/${ids.plain}/plan`)];
		expect(managedPlan).toMatchObject({ profile: { id: profiles.node }, selector: { name: "by-role-node", matchedOn: ["label role=node"] } });
		expect(plainPlan).toMatchObject({ profile: { id: profiles.parked }, selector: { name: "by-role-parked" } });
		expect(managedPlan.scripts.ipxe).toContain(`cpp.post=${lab.base}/api/boot/${MANAGED}/postboot`);
		expect(plainPlan.scripts.ipxe).toBe("#!ipxe\necho parked machine plain-1 (parked)\nsleep 600\n");

		// The plain machine boots (QEMU's iPXE ROM → the distributor's proxy answer → /api/boot → its profile).
		lan.addTap("tplain");
		const guest = bootGuest(lan, { firmware: "bios", tap: "tplain", mac: PLAIN, dir: lab.dir, maxSeconds: GUEST_SECONDS, name: "plain" });
		guests.push(guest);
		// iPXE writes to the screen, not the serial port: the machine path's record of what it answered is the proof.
		const booted = await eventually(
			async () => {
				const row = await machine(ids.plain);
				return String(row.statusReason).includes(`fetched its iPXE script from ${PLAIN}`) ? row : undefined;
			},
			BOOT_WAIT_MS,
			"the plain guest fetching its script from /api/boot",
		);
		expect(booted.statusReason).toContain(`(profile "parked", selector "by-role-parked")`);
		// The timeline is written in batches, a second apart.
		const step = await eventually(async () => {
			const timeline = await lab.json(`/boots/hosts/${PLAIN}`);
			return (timeline.events as { kind: string; mac: string; detail: string }[]).find((e) => e.kind === "script" && e.mac === PLAIN && e.detail.includes('profile "parked"'));
		}, 15_000, "the plain guest's script step on the boot timeline");
		expect(step.detail).toContain(`machine ${ids.plain}`);
		await stopChild(guest.child);
	}, 300_000);

	it("2. provisions the managed guest from power-off to a registered node with one call, then runs a script on it", async () => {
		expect(managed.qemuPid()).toBeNull();
		const started = await call("POST", `/machines/${ids.managed}/provision`, {});
		expect(started).toMatchObject({ status: 202, body: { id: ids.managed } });
		// The BMC's cycle answers once the guest is on; a quick guest may have booted and registered by then.
		expect(["provisioning", "ready"]).toContain(started.body.status);
		// ipmi_sim refuses `chassis bootdev pxe`: provisioning goes on, the guest boots from the network by its own order.
		expect(started.body.warning).toContain("refused the boot device");
		expect(JSON.stringify(started.body)).not.toContain(managed.bmc.password);
		await eventually(() => managed.qemuPid() ?? undefined, 20_000, "QEMU started by the power cycle");

		const ready = await eventually(
			async () => {
				const row = await machine(ids.managed);
				if (row.status === "failed") throw new Error(`provisioning failed: ${row.statusReason}`);
				return row.status === "ready" ? row : undefined;
			},
			BOOT_WAIT_MS,
			"the managed machine ready",
		).catch((err: Error) => {
			throw new Error(`${err.message}${serialOf(managed)}`);
		});
		expect(ready.statusReason).toContain("with its token");
		const node = await lab.json(`/localnodes/${ready.localnodeId}`);
		expect(node).toMatchObject({ artifactId: SITE, pingable: true });

		const { presented } = await lab.json(`/localnodes/${node.id}/hostkey`);
		expect((await call("PUT", `/localnodes/${node.id}/hostkey`, { hostKey: presented })).status).toBe(200);
		const ran = await eventually(
			async () => {
				const res = await call("PUT", `/localnodes/${node.id}/script`, { script: "echo provisioned on $(uname -m)", privateKey: lab.keys.privateKey, timeout: 20 });
				return res.status === 200 ? res.body : undefined;
			},
			60_000,
			"a script run on the provisioned node",
		);
		expect(ran).toMatchObject({ code: 0, stdout: "provisioned on x86_64\n" });
	}, 300_000);

	it("3. records an unknown guest as discovered, with its MAC, SMBIOS UUID and serial", async () => {
		lan.addTap("tstrange");
		const options = { firmware: "bios" as const, tap: "tstrange", mac: STRANGER, dir: lab.dir, name: "stranger" };
		const serialLog = serialLogOf(options);
		fs.writeFileSync(serialLog, "");
		const args = [...guestArgs(options, serialLog), "-smbios", `type=1,serial=${STRANGER_SERIAL},uuid=${STRANGER_UUID}`];
		const child = lan.spawnIn(lan.ns.bridge, "timeout", ["-s", "KILL", String(GUEST_SECONDS), QEMU_OF.bios, ...args], { stdio: "ignore" });
		const guest: Guest = { child, serialLog, serial: () => fs.readFileSync(serialLog, "utf8") };
		guests.push(guest);
		const discovered = await eventually(
			async () => {
				const page = await lab.json(`/machines?mac=${STRANGER}`);
				return page.rows[0];
			},
			BOOT_WAIT_MS,
			"the unknown guest discovered",
		).catch((err: Error) => {
			throw new Error(`${err.message}${serialOf(guest)}`);
		});
		expect(discovered).toMatchObject({ status: "discovered", macs: [STRANGER], uuid: STRANGER_UUID, serial: STRANGER_SERIAL, firmware: "bios", artifactId: null });
		await stopChild(child);
	}, 300_000);

	it("4. with known-machines-only, the unknown guest gets no PXE answer while a known machine still does", async () => {
		expect((await call("PUT", `/distributors/${distributorId}`, { ...seedBody, knownMachinesOnly: true })).body).toMatchObject({ knownMachinesOnly: true, state: "on" });
		const fromDistributor = (answers: { from: string }[]) => answers.some((a) => a.from === lan.distributorIp);
		const stranger = await pxeProbe(lan, 0, "ipxe", 2000, STRANGER);
		const known = await pxeProbe(lan, 0, "ipxe", 2000, PLAIN);
		// The LAN's router answered both: the probes reached the LAN.
		expect(stranger.answers.some((a) => a.from === lan.routerIp)).toBe(true);
		expect({ stranger: fromDistributor(stranger.answers), known: fromDistributor(known.answers) }).toEqual({ stranger: false, known: true });
	}, 60_000);

	it("5. refuses a registration with a wrong or a replayed machine token", async () => {
		const register = (token: string) => fetch(`${lab.base}/api/localnodes?artifactId=${SITE}&mac=${PLAIN}&machineToken=${token}&ip=${lan.prefix}.77`, { method: "POST" });
		const wrong = await register("cpm_not-a-token-of-any-machine");
		expect(wrong.status).toBe(401);
		expect(((await wrong.json()) as { data: unknown }).data).toEqual([expect.objectContaining({ field: "machineToken" })]);
		const script = await (await fetch(`${lab.base}/api/boot/${PLAIN}/postboot`)).text();
		const token = /machineToken=(cpm_[A-Za-z0-9_-]+)/.exec(script)?.[1];
		expect(token).toBeDefined();
		expect((await register(token!)).status).toBe(201);
		const replayed = await register(token!);
		expect(replayed.status).toBe(401);
		expect(((await replayed.json()) as { data: unknown }).data).toEqual([expect.objectContaining({ field: "machineToken" })]);
	}, 60_000);
});
