import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, storeFor } from "@clusterplatform/core";
import { startProvisioner, type RunningProvisioner } from "@clusterplatform/cli";
import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { startNats, type TestServer } from "@clusterplatform/test-kit/servers";

const SITE = "felicitas.pojtinger.swabia.sol";
const OTHER_SITE = "other.site.example";
const BIOS = "/usr/lib/ipxe/undionly.kpxe";
const UEFI = "/usr/lib/ipxe/ipxe.efi";

interface Worker {
	dataDir: string;
	nodeId: string;
	running: RunningProvisioner | null;
	start(): Promise<void>;
	stop(): Promise<void>;
}

/**
 * A distributor worker in its own broker (as on another machine), talking to the manager over NATS.
 * Its PUBLIC_URL is the gateway's, as in a deployment: the one non-public origin it downloads from.
 */
function worker(nats: string, site: string, name: string, publicUrl: string): Worker {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `cpp-distributor-${name}-`));
	const w: Worker = {
		dataDir,
		nodeId: `worker-${name}-${process.pid}`,
		running: null,
		async start() {
			// A restart is a new process: a new node instance under a new node ID, same data dir.
			const env = { TRANSPORTER: nats, CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: site, PUBLIC_URL: publicUrl, DATA_DIR: dataDir, NODE_ID: `worker-${name}-${process.pid}-${Date.now()}`, LOG_LEVEL: "warn", PORT: "0" };
			w.running = await startProvisioner(loadConfig(env), ["distributor-worker"]);
			// A site's node ID carries its site (site.<site>.<NODE_ID>): what the manager checks before trusting it.
			w.nodeId = w.running.broker.nodeID;
		},
		async stop() {
			await w.running?.stop();
			w.running = null;
		},
	};
	return w;
}

describe.each(DATABASES)("distributors over NATS on %s", (database) => {
	let nats: TestServer;
	let provisioner: TestProvisioner;
	let site: Worker;
	let other: Worker;
	let biosUrl: string;
	let uefiUrl: string;

	const rowOf = async (w: Worker) => {
		const res = await provisioner.api(`/distributors?search=${encodeURIComponent(w === site ? SITE : OTHER_SITE)}&searchFields=artifactId`);
		const page = await res.json();
		return page.rows as Record<string, any>[];
	};
	const seedBody = (extra: Record<string, unknown> = {}) => ({ ipxePxeUefiUrl: uefiUrl, ipxePxeBiosUrl: biosUrl, artifactId: 1, device: "lo", range: "127.0.0.1", ...extra });

	beforeAll(async () => {
		nats = await startNats();
		provisioner = await startTestProvisioner({ database, services: ["gateway", "distributors", "localnodes", "scriptruns", "sshkeys", "sshkey"], env: { TRANSPORTER: nats.url, ALLOW_LOOPBACK_NODES: "true" } });
		const store = storeFor(provisioner.config);
		biosUrl = (await store.putFile("boot/undionly.kpxe", BIOS)).url;
		uefiUrl = (await store.putFile("boot/ipxe.efi", UEFI)).url;
		site = worker(nats.url, SITE, "site", provisioner.baseUrl);
		other = worker(nats.url, OTHER_SITE, "other", provisioner.baseUrl);
		await Promise.all([site.start(), other.start()]);
	});
	afterAll(async () => {
		await site?.stop();
		await other?.stop();
		await provisioner?.stop();
		await nats?.stop();
		for (const w of [site, other]) if (w) fs.rmSync(w.dataDir, { recursive: true, force: true });
	});

	it("lists a connected worker as its site's distributor, searchable by artifactId as in the seed", async () => {
		const [row] = await eventually(async () => {
			const rows = await rowOf(site);
			return rows.length === 1 && rows[0]!.online ? rows : undefined;
		}, 20_000, "distributor row");
		expect(row).toMatchObject({ artifactId: SITE, nodeID: site.nodeId, online: true, on: false, state: "off" });
		expect(Date.parse(row!.lastSeen)).toBeGreaterThan(Date.now() - 60_000);
		const got = await (await provisioner.api(`/distributors/${row!.id}`)).json();
		expect(got).toMatchObject({ id: row!.id, artifactId: SITE });
	});

	it("configures exactly the addressed worker from the seed's PUT body", async () => {
		const [row] = await rowOf(site);
		await eventually(async () => (await rowOf(other)).length === 1, 20_000, "other distributor row");
		const res = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody() });
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ id: row!.id, device: "lo", range: "127.0.0.1", ipxePxeBiosUrl: biosUrl, ipxePxeUefiUrl: uefiUrl, on: false });
		const dir = path.join(site.dataDir, "distributor");
		expect(fs.readFileSync(path.join(dir, "tftp", "undionly.kpxe")).equals(fs.readFileSync(BIOS))).toBe(true);
		expect(fs.readFileSync(path.join(dir, "tftp", "ipxe.efi")).equals(fs.readFileSync(UEFI))).toBe(true);
		const conf = fs.readFileSync(path.join(dir, "dnsmasq.conf"), "utf8");
		expect(conf).toContain("interface=lo\n");
		expect(conf).toContain("dhcp-range=127.0.0.0,proxy,255.0.0.0\n");
		// The other site's worker was not touched.
		expect(fs.existsSync(path.join(other.dataDir, "distributor", "dnsmasq.conf"))).toBe(false);
	});

	it.each([
		[{ device: "nosuch0" }, "device", "no interface"],
		[{ device: "lo;reboot" }, "device", ""],
		[{ range: "10.213.250.1" }, "range", "not on a network of lo"],
		[{ range: "300.1.1.1" }, "range", ""],
		[{ ipxePxeBiosUrl: "ftp://127.0.0.1/undionly.kpxe" }, "ipxePxeBiosUrl", "http"],
		[{ ipxePxeUefiUrl: "http://127.0.0.1:1/a,dhcp-boot=evil" }, "ipxePxeUefiUrl", "characters"],
		[{ artifactId: OTHER_SITE }, "artifactId", "belongs to site"],
		[{ scriptUrl: "javascript:alert(1)" }, "scriptUrl", ""],
		[{ ipxePxeUefiIa32Url: "tftp://127.0.0.1/ipxe.efi" }, "ipxePxeUefiIa32Url", "http"],
		[{ ipxePxeUefiArm64Url: "http://127.0.0.1/x.efi\npxe-service=x86PC,evil" }, "ipxePxeUefiArm64Url", "characters"],
		[{ ipxePxeUefiArm64Url: 42 }, "ipxePxeUefiArm64Url", ""],
		[{ surprise: true }, "surprise", ""],
	])("refuses %j with a 422 naming the field, leaving the last configuration in place", async (change, field, reason) => {
		const [row] = await rowOf(site);
		const confFile = path.join(site.dataDir, "distributor", "dnsmasq.conf");
		const before = fs.readFileSync(confFile, "utf8");
		const res = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody(change) });
		expect(res.status).toBe(422);
		const body = await res.json();
		expect(JSON.stringify(body.data)).toContain(field);
		expect(body.message).toContain(reason);
		expect(fs.readFileSync(confFile, "utf8")).toBe(before);
	});

	it("downloads the optional ia32 and arm64 UEFI binaries, answers their architectures, and drops them again when a seed body omits them", async () => {
		const [row] = await rowOf(site);
		const dir = path.join(site.dataDir, "distributor");
		const res = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody({ ipxePxeUefiIa32Url: uefiUrl, ipxePxeUefiArm64Url: biosUrl }) });
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ ipxePxeUefiIa32Url: uefiUrl, ipxePxeUefiArm64Url: biosUrl });
		expect(fs.readFileSync(path.join(dir, "tftp", "ipxe-ia32.efi")).equals(fs.readFileSync(UEFI))).toBe(true);
		expect(fs.readFileSync(path.join(dir, "tftp", "ipxe-arm64.efi")).equals(fs.readFileSync(BIOS))).toBe(true);
		expect(fs.readFileSync(path.join(dir, "dnsmasq.conf"), "utf8")).toMatch(/pxe-service=tag:!ipxe,IA32_EFI,clusterplatform,ipxe-ia32\.efi\n[^]*pxe-service=tag:!ipxe,ARM64_EFI,clusterplatform,ipxe-arm64\.efi\n/);
		const missing = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody({ ipxePxeUefiArm64Url: `${provisioner.baseUrl}/api/artifacts/boot/missing.efi` }) });
		expect(missing.status).toBe(422);
		expect((await missing.json()).message).toMatch(/ipxePxeUefiArm64Url: download failed: HTTP 404/);
		// The seed's body, as before: the two seed binaries only.
		const seed = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody() });
		expect(await seed.json()).toMatchObject({ ipxePxeUefiIa32Url: null, ipxePxeUefiArm64Url: null });
		expect(fs.existsSync(path.join(dir, "tftp", "ipxe-ia32.efi"))).toBe(false);
		expect(fs.existsSync(path.join(dir, "tftp", "ipxe-arm64.efi"))).toBe(false);
		expect(fs.readFileSync(path.join(dir, "dnsmasq.conf"), "utf8")).not.toMatch(/IA32_EFI|ARM64_EFI/);
	});

	it("names the URL that could not be downloaded", async () => {
		const [row] = await rowOf(site);
		const res = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody({ ipxePxeBiosUrl: `${provisioner.baseUrl}/api/artifacts/boot/missing.kpxe` }) });
		expect(res.status).toBe(422);
		expect((await res.json()).message).toMatch(/ipxePxeBiosUrl: download failed: HTTP 404/);
	});

	it.each([
		["a closed port of the gateway's host", () => `http://127.0.0.1:1/undionly.kpxe`, /must not point at a loopback, private or link-local address \(127\.0\.0\.1\)/],
		["a private address", () => "http://10.0.0.5:8080/undionly.kpxe", /must not point at a loopback, private or link-local address/],
		["an IPv4-mapped loopback", () => "http://[::ffff:7f00:1]:6379/", /must not point at a loopback, private or link-local address/],
	])("refuses a boot file from %s with a 422 that never names the network's answer", async (_what, url, reason) => {
		const [row] = await rowOf(site);
		const res = await provisioner.api(`/distributors/${row!.id}`, { method: "PUT", json: seedBody({ ipxePxeBiosUrl: url() }) });
		expect(res.status).toBe(422);
		const body = await res.json();
		expect(body.data[0].field).toBe("ipxePxeBiosUrl");
		expect(body.message).toMatch(reason);
		expect(body.message).not.toMatch(/ECONN|EHOSTUNREACH|ETIMEDOUT|fetch failed/);
	});

	it("refuses to switch on a distributor that was never configured", async () => {
		const [row] = await rowOf(other);
		const res = await provisioner.api(`/distributors/${row!.id}/status`, { method: "PUT", json: { on: true, artifactId: 1 } });
		expect(res.status).toBe(409);
		expect((await res.json()).message).toMatch(/not configured/);
	});

	it("shows a stopped worker offline with its lastSeen, answers 503 for it, and keeps one row across a restart", async () => {
		const [before] = await rowOf(other);
		await other.stop();
		const offline = await eventually(async () => {
			const [row] = await rowOf(other);
			return row && !row.online ? row : undefined;
		}, 20_000, "offline row");
		expect(offline.lastSeen).toBeTruthy();
		const res = await provisioner.api(`/distributors/${before!.id}/status`, { method: "PUT", json: { on: false, artifactId: 1 } });
		expect(res.status).toBe(503);
		expect((await res.json()).message).toMatch(/offline/);
		await other.start();
		const again = await eventually(async () => {
			const rows = await rowOf(other);
			return rows.length === 1 && rows[0]!.online && rows[0]!.nodeID === other.nodeId ? rows[0] : undefined;
		}, 20_000, "row back online");
		expect(again!.id).toBe(before!.id);
	});

	it("answers 503 for a script on a node whose site has no distributor, and 422 without a key", async () => {
		const node = await (await provisioner.api("/localnodes", { method: "POST", json: { ip: "127.0.0.9", artifactId: "nobody.here", pingable: true } })).json();
		const keys = await (await provisioner.api("/sshkey")).json();
		const noDistributor = await provisioner.api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "uname -r", privateKey: keys.privateKey } });
		expect(noDistributor.status).toBe(503);
		expect((await noDistributor.json()).message).toMatch(/no distributor for site "nobody.here"/);
		await eventually(async () => (await rowOf(site))[0]?.online, 20_000, "site distributor online");
		const onSite = await (await provisioner.api("/localnodes", { method: "POST", json: { ip: "127.0.0.10", artifactId: SITE, pingable: true } })).json();
		const noKey = await provisioner.api(`/localnodes/${onSite.id}/script`, { method: "PUT", json: { script: "uname -r" } });
		expect(noKey.status).toBe(422);
		expect((await noKey.json()).message).toMatch(/privateKey: is required/);
		// With no key in the request, the site's newest stored private key is used (here SSH then fails: nobody is at that address).
		expect((await provisioner.api("/sshkeys", { method: "POST", json: { text: keys.privateKey, artifactId: SITE, private: true } })).status).toBe(201);
		const storedKey = await provisioner.api(`/localnodes/${onSite.id}/script`, { method: "PUT", json: { script: "uname -r", timeout: 3, hostKey: `SHA256:${"A".repeat(43)}` } });
		expect(storedKey.status).toBe(502);
		expect((await storedKey.json()).message).toMatch(/^SSH to 127\.0\.0\.10 failed/);
		const badKey = await provisioner.api(`/localnodes/${onSite.id}/script`, { method: "PUT", json: { script: "uname -r", privateKey: "not a key" } });
		expect(badKey.status).toBe(422);
		expect((await badKey.json()).message).toMatch(/privateKey/);
	});
});
