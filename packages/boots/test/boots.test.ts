import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { BOOT_EVENTS, BootEventRecorder, type BootEvent } from "@clusterplatform/core";
import { DnsmasqBootLog, completeMacsFromNeighbours } from "@clusterplatform/distributor";
import { hostsOf } from "@clusterplatform/boots";
import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";

const MAC = "52:54:00:c0:ff:ee";

describe("dnsmasq's log as boot events", () => {
	it("joins a proxy-DHCP answer's PXE and bootfile lines by transaction id, and reads TFTP transfers", async () => {
		const arp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cpp-arp-")), "arp");
		fs.writeFileSync(arp, `IP address       HW type     Flags       HW address            Mask     Device\n10.0.0.150       0x1         0x2         ${MAC}     *        eth0\n10.0.0.151       0x1         0x0         00:00:00:00:00:00     *        eth0\n`);
		const log = new DnsmasqBootLog();
		expect(log.parse(`dnsmasq-dhcp[42]: 3952163913 PXE(veth0) ${MAC.toUpperCase()} proxy`)).toBeNull();
		expect(log.parse("dnsmasq-dhcp[42]: 3952163913 tags: efi64, veth0")).toBeNull();
		expect(log.parse("dnsmasq-dhcp[42]: 3952163913 bootfile name: ipxe.efi")).toEqual({ kind: "dhcp", ip: null, mac: MAC, detail: "proxy: boot ipxe.efi" });
		// The same line again names nothing pending.
		expect(log.parse("dnsmasq-dhcp[42]: 3952163913 bootfile name: ipxe.efi")).toBeNull();
		expect(log.parse(`dnsmasq-dhcp[42]: 77 PXE(veth0) 10.0.0.150 ${MAC} ipxe.efi`)).toBeNull();
		expect(log.parse("dnsmasq-dhcp[42]: 77 bootfile name: ipxe.efi")).toMatchObject({ ip: "10.0.0.150", mac: MAC });
		const sent = log.parse("dnsmasq-tftp[42]: sent /var/lib/cpp/tftp/ipxe.efi to 10.0.0.150");
		const missing = log.parse("dnsmasq-tftp[42]: file /var/lib/cpp/tftp/nope not found for 10.0.0.151");
		expect(sent).toEqual({ kind: "tftp", ip: "10.0.0.150", mac: null, detail: "sent ipxe.efi" });
		expect(missing).toEqual({ kind: "tftp", ip: "10.0.0.151", mac: null, detail: "not found: nope" });
		expect(log.parse("dnsmasq[42]: started, version 2.90 DNS disabled")).toBeNull();
		// Per batch, the neighbour table links a transfer's address to the MAC; an incomplete entry links nothing.
		await completeMacsFromNeighbours([sent!, missing!], arp);
		expect(sent!.mac).toBe(MAC);
		expect(missing!.mac).toBeNull();
	});

	it("groups a host's MAC-only and IP events once one event links them", () => {
		const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
		const event = (s: number, kind: BootEvent["kind"], ip: string | null, mac: string | null): BootEvent => ({ at: at(s), kind, ip, mac, artifactId: ip ? null : "site", detail: kind });
		const newestFirst = [event(4, "registered", "10.0.0.150", null), event(3, "script", "10.0.0.150", null), event(2, "tftp", "10.0.0.150", null), event(1, "dhcp", "10.0.0.150", MAC), event(0, "dhcp", null, MAC), event(0, "dhcp", null, "52:54:00:00:00:01")];
		const hosts = hostsOf(newestFirst);
		expect(hosts.map((h) => h.host)).toEqual(["10.0.0.150", "52:54:00:00:00:01"]);
		expect(hosts[0]).toMatchObject({ ip: "10.0.0.150", macs: [MAC], sites: ["site"], steps: ["dhcp", "tftp", "script", "registered"], count: 5, firstSeen: at(0), lastSeen: at(4) });
	});
});

describe("BootEventRecorder", () => {
	it("sends one bounded batch per flush to one boots instance, and counts what did not fit", async () => {
		const broker = new ServiceBroker({ logger: false });
		const batches: BootEvent[][] = [];
		broker.createService({ name: "boots", events: { [BOOT_EVENTS]: (ctx: { params: { events: BootEvent[] } }) => void batches.push(ctx.params.events) } });
		await broker.start();
		const warnings: string[] = [];
		broker.logger.warn = ((message: string) => void warnings.push(message)) as typeof broker.logger.warn;
		try {
			const recorder = new BootEventRecorder(broker, { maxBatch: 3, flushMs: 60_000 });
			for (let i = 0; i < 5; i++) recorder.record({ kind: "script", ip: `10.0.0.${i}`, mac: null, artifactId: null, detail: `GET ${i}` });
			expect(recorder.admit()).toBe(false);
			await recorder.flush();
			expect(batches.map((b) => b.map((e) => e.ip))).toEqual([["10.0.0.0", "10.0.0.1", "10.0.0.2"]]);
			expect(warnings).toEqual(["boot timeline: 3 events dropped (more than 3 in one batch)"]);
			// The next batch has room again.
			expect(recorder.admit()).toBe(true);
			await recorder.stop();
			expect(batches).toHaveLength(1);
		} finally {
			await broker.stop();
		}
	});

	it("completes a batch once, before it is sent (the distributor fills in MACs there)", async () => {
		const broker = new ServiceBroker({ logger: false });
		const batches: BootEvent[][] = [];
		broker.createService({ name: "boots", events: { [BOOT_EVENTS]: (ctx: { params: { events: BootEvent[] } }) => void batches.push(ctx.params.events) } });
		await broker.start();
		try {
			let completions = 0;
			const recorder = new BootEventRecorder(broker, {
				flushMs: 60_000,
				complete: async (events) => {
					completions++;
					for (const event of events) event.mac ??= MAC;
				},
			});
			for (let i = 0; i < 3; i++) recorder.record({ kind: "tftp", ip: `10.0.0.${i}`, mac: null, artifactId: "site", detail: "sent ipxe.efi" });
			await recorder.flush();
			expect(completions).toBe(1);
			expect(batches[0]!.map((e) => e.mac)).toEqual([MAC, MAC, MAC]);
		} finally {
			await broker.stop();
		}
	});
});

describe.each(DATABASES)("/api/boots on %s", (database) => {
	let provisioner: TestProvisioner;

	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: ["gateway", "boots", "mainscripts", "kickstarts"] });
	}, 60_000);
	afterAll(() => provisioner?.stop());

	it("records what a host fetches without a token, not what an operator reads with one", async () => {
		const script = await (await provisioner.api("/mainscripts", { method: "POST", json: { text: "#!ipxe\necho hi\n" } })).json();
		const kickstart = await (await provisioner.api("/kickstarts", { method: "POST", json: { text: "text\n" } })).json();
		// A booting host: no Authorization header (served from the machine-path cache the second time).
		for (let i = 0; i < 2; i++) expect((await fetch(`${provisioner.baseUrl}/api/mainscripts/${script.id}`)).status).toBe(200);
		expect((await fetch(`${provisioner.baseUrl}/api/kickstarts/${kickstart.id}`)).status).toBe(200);
		// A 404 is no boot step: anyone could write those (only 2xx machine-path answers are history).
		expect((await fetch(`${provisioner.baseUrl}/api/mainscripts/999999`)).status).toBe(404);
		// The operator's read of the same script is not a boot step.
		expect((await provisioner.api(`/mainscripts/${script.id}`)).status).toBe(200);

		const host = await eventually(async () => {
			const found = await (await provisioner.api("/boots/hosts/127.0.0.1")).json();
			return found.count === 3 ? found : undefined;
		}, 10_000, "three boot steps of 127.0.0.1");
		expect(host.steps).toEqual(["script", "kickstart"]);
		expect(host.events.map((e: BootEvent) => e.detail)).toEqual([
			`GET /api/mainscripts/${script.id} 200`,
			`GET /api/mainscripts/${script.id} 200`,
			`GET /api/kickstarts/${kickstart.id} 200`,
		]);
		const hosts = await (await provisioner.api("/boots/hosts")).json();
		expect(hosts.find((h: { host: string }) => h.host === "127.0.0.1")).toMatchObject({ count: 3, last: { kind: "kickstart" } });
		const page = await (await provisioner.api("/boots?sort=-id&pageSize=2")).json();
		expect(page.rows).toHaveLength(2);
		expect(page.total).toBe(3);
	});

	it("takes distributor batches, keeps only known kinds, and refuses a host that is neither IP nor MAC", async () => {
		await provisioner.broker.emit(BOOT_EVENTS, {
			events: [
				{ kind: "dhcp", mac: MAC.toUpperCase(), ip: null, artifactId: "site.a", detail: "proxy: boot ipxe.efi", at: new Date().toISOString() },
				{ kind: "rm -rf", mac: MAC, ip: null, artifactId: "site.a", detail: "not a kind" },
			],
		});
		const host = await eventually(async () => {
			const found = await (await provisioner.api(`/boots/hosts/${MAC}`)).json();
			return found.count ? found : undefined;
		}, 10_000, "the distributor's event");
		expect(host).toMatchObject({ host: MAC, ip: null, macs: [MAC], sites: ["site.a"], steps: ["dhcp"], count: 1 });
		for (const bad of ["not-a-host", "10.0.0.999", "..%2F..%2Fetc"]) {
			const res = await provisioner.api(`/boots/hosts/${bad}`);
			expect(res.status).toBe(422);
			expect(JSON.stringify(await res.json())).toContain("host");
		}
		expect((await provisioner.api("/boots", { method: "POST", json: { kind: "dhcp" } })).status).toBe(404);
	});
});
