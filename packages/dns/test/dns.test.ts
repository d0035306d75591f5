import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { stopChild } from "@clusterplatform/test-kit/servers";

/**
 * The site DNS end to end with real dnsmasq: the dns worker's dnsmasq runs in a network namespace
 * this test creates (CLUSTERPLATFORM_DNS_NETNS), a second dnsmasq in the same namespace plays the
 * upstream on 127.0.0.2, and Node's resolver is run inside the namespace. No DNS leaves it.
 */
const SITE = "dns.site.example";
const DOMAIN = "lan.example";
const PORT = 5353;
const UPSTREAM = "127.0.0.2";
/** The site's LAN interface and another one (an uplink) in the namespace: dnsmasq must answer on the LAN only. */
const LAN = { device: "lan0", address: "10.77.0.1" };
const WAN = { device: "wan0", address: "10.88.0.1" };

function ip(args: string[], allowFailure = false): void {
	const result = spawnSync("ip", args, { encoding: "utf8", timeout: 10_000 });
	if (result.status !== 0 && !allowFailure) throw new Error(`ip ${args.join(" ")} failed: ${result.stderr}`);
}

/** One A lookup from inside the namespace: {addresses} or {code} (e.g. ENOTFOUND for NXDOMAIN). */
function resolveIn(ns: string, name: string, server = "127.0.0.1"): { addresses?: string[]; code?: string } {
	const script = `const { Resolver } = require("node:dns").promises;
const r = new Resolver({ timeout: 2000, tries: 1 });
r.setServers(["${server}:${PORT}"]);
r.resolve4(process.argv[1]).then((addresses) => console.log(JSON.stringify({ addresses })), (e) => console.log(JSON.stringify({ code: e.code })));`;
	const result = spawnSync("ip", ["netns", "exec", ns, process.execPath, "-e", script, name], { encoding: "utf8", timeout: 15_000 });
	if (result.status !== 0) throw new Error(`resolver failed: ${result.stderr}`);
	return JSON.parse(result.stdout.trim());
}

const canRun = process.getuid?.() === 0 && spawnSync("ip", ["-V"]).status === 0;
const maybe = canRun ? describe.each(DATABASES) : describe.skip.each(DATABASES);
if (!canRun) console.log("SKIPPED packages/dns/test/dns.test.ts: needs root and iproute2 for a network namespace");

maybe("site DNS in a network namespace on %s", (database) => {
	const ns = `cpp-dns-${process.pid}-${database}`;
	let upstream: ChildProcess | null = null;
	let provisioner: TestProvisioner;
	let id: number;

	beforeAll(async () => {
		ip(["netns", "add", ns]);
		ip(["-n", ns, "link", "set", "lo", "up"]);
		for (const { device, address } of [LAN, WAN]) {
			ip(["-n", ns, "link", "add", device, "type", "veth", "peer", "name", `${device}p`]);
			for (const end of [device, `${device}p`]) ip(["-n", ns, "link", "set", end, "up"]);
			ip(["-n", ns, "addr", "add", `${address}/24`, "dev", device]);
		}
		upstream = spawn("ip", ["netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--port=53", `--listen-address=${UPSTREAM}`, "--bind-interfaces", "--no-resolv", "--no-hosts", "--user=root", "--pid-file=", "--host-record=far.upstream.test,10.9.9.9", "--log-facility=-"], { stdio: "ignore" });
		provisioner = await startTestProvisioner({ database, services: ["gateway", "dnses", "dns-worker"], env: { CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, CLUSTERPLATFORM_DNS_NETNS: ns } });
		const rows = await eventually(async () => {
			const page = await (await provisioner.api("/dnses")).json();
			return page.rows?.length === 1 && page.rows[0].online ? page.rows : undefined;
		}, 20_000, "the dns worker's row");
		id = rows[0].id;
	}, 60_000);
	afterAll(async () => {
		await provisioner?.stop();
		await stopChild(upstream);
		ip(["netns", "del", ns], true);
	});

	it("lists the site's worker keyed by its artifactId, off and unconfigured", async () => {
		const row = await (await provisioner.api(`/dnses/${id}`)).json();
		expect(row).toMatchObject({ artifactId: SITE, online: true, on: false, state: "off", domain: null });
		const res = await provisioner.api(`/dnses/${id}/status`, { method: "PUT", json: { on: true } });
		expect(res.status).toBe(409);
	});

	it("rejects bad settings naming the field", async () => {
		for (const [body, field] of [
			[{ device: LAN.device, domain: "bad domain", upstreams: [] }, "domain"],
			[{ device: LAN.device, domain: DOMAIN, upstreams: ["1.1.1.1", "not-an-ip"] }, "upstreams[1]"],
			[{ device: LAN.device, domain: DOMAIN, upstreams: [], port: 70000 }, "port"],
			[{ domain: DOMAIN, upstreams: [] }, "device"],
			[{ device: "lan0;reboot", domain: DOMAIN, upstreams: [] }, "device"],
			[{ device: "nosuch0", domain: DOMAIN, upstreams: [] }, "device"],
		] as const) {
			const res = await provisioner.api(`/dnses/${id}`, { method: "PUT", json: body });
			expect(res.status).toBe(422);
			expect(JSON.stringify((await res.json()).data)).toContain(field);
		}
		const row = await (await provisioner.api(`/dnses/${id}`)).json();
		expect(row).toMatchObject({ device: null, domain: null });
	});

	it("serves configured hosts, NXDOMAIN for unknown local names, forwards others upstream, and logs the queries", async () => {
		let res = await provisioner.api(`/dnses/${id}`, { method: "PUT", json: { device: LAN.device, domain: DOMAIN, upstreams: [UPSTREAM], port: PORT } });
		expect(res.status).toBe(200);
		res = await provisioner.api(`/dnses/${id}/hosts`, { method: "PUT", json: { hosts: `# site hosts\n10.1.2.3 web.${DOMAIN} www.${DOMAIN}\n\nfd00::5 v6.${DOMAIN}\n10.1.2.4 db # short name, domain appended\n` } });
		expect(res.status).toBe(200);
		res = await provisioner.api(`/dnses/${id}/status`, { method: "PUT", json: { on: true } });
		const row = await res.json();
		expect(row).toMatchObject({ on: true, state: "on", device: LAN.device, domain: DOMAIN, upstreams: [UPSTREAM], port: PORT });

		expect(resolveIn(ns, `web.${DOMAIN}`)).toEqual({ addresses: ["10.1.2.3"] });
		expect(resolveIn(ns, `www.${DOMAIN}`)).toEqual({ addresses: ["10.1.2.3"] });
		expect(resolveIn(ns, `db.${DOMAIN}`)).toEqual({ addresses: ["10.1.2.4"] });
		expect(resolveIn(ns, `nothere.${DOMAIN}`)).toEqual({ code: "ENOTFOUND" });
		expect(resolveIn(ns, "far.upstream.test")).toEqual({ addresses: ["10.9.9.9"] });

		const log = await eventually(async () => {
			const body = await (await provisioner.api(`/dnses/${id}/log?lines=200`)).json();
			return body.lines.some((l: string) => l.includes(`nothere.${DOMAIN}`)) ? body.lines : undefined;
		}, 10_000, "queries in the log");
		expect(log.some((l: string) => /query\[A\] web\.lan\.example/.test(l))).toBe(true);
		expect(log.some((l: string) => /forwarded far\.upstream\.test to 127\.0\.0\.2/.test(l))).toBe(true);
		const two = await (await provisioner.api(`/dnses/${id}/log?lines=2`)).json();
		expect(two.lines).toHaveLength(2);
		expect((await provisioner.api(`/dnses/${id}/log?lines=100000`)).status).toBe(422);
	}, 60_000);

	it("answers on the site's LAN interface (and loopback) only, never on another interface or the wildcard", async () => {
		expect(resolveIn(ns, `web.${DOMAIN}`, LAN.address)).toEqual({ addresses: ["10.1.2.3"] });
		expect(resolveIn(ns, `web.${DOMAIN}`, WAN.address)).toEqual({ code: "ECONNREFUSED" });
		const sockets = spawnSync("ip", ["netns", "exec", ns, "ss", "-lnuH", "sport", "=", `:${PORT}`], { encoding: "utf8", timeout: 10_000 }).stdout;
		const bound = sockets.split("\n").filter(Boolean).map((line) => line.trim().split(/\s+/)[3]).sort();
		expect(bound).toEqual(expect.arrayContaining([`${LAN.address}:${PORT}`, `127.0.0.1:${PORT}`]));
		// Each socket is on an address of the LAN interface (its IPv6 link-local included) or loopback: no wildcard, no wan0.
		for (const local of bound) expect(local).toMatch(new RegExp(`^(${LAN.address.replace(/\./g, "\\.")}|127\\.0\\.0\\.1|\\[::1\\]|\\[fe80::[0-9a-f:]+\\]%${LAN.device}):${PORT}$`));
	});

	it("answers a bad hosts line with a 422 naming the line, and keeps serving the old hosts", async () => {
		const res = await provisioner.api(`/dnses/${id}/hosts`, { method: "PUT", json: { hosts: `10.1.2.9 new.${DOMAIN}\n# fine\n10.1.2.300 broken.${DOMAIN}\n10.1.2.10 bad_name!\n` } });
		expect(res.status).toBe(422);
		const body = await res.json();
		expect(body.data).toEqual([
			expect.objectContaining({ field: "hosts", line: 3, message: expect.stringContaining("not an IPv4 or IPv6 address") }),
			expect.objectContaining({ field: "hosts", line: 4, message: expect.stringContaining("not a host name") }),
		]);
		expect(resolveIn(ns, `new.${DOMAIN}`)).toEqual({ code: "ENOTFOUND" });
		expect(resolveIn(ns, `web.${DOMAIN}`)).toEqual({ addresses: ["10.1.2.3"] });
		const row = await (await provisioner.api(`/dnses/${id}`)).json();
		expect(row.hosts).not.toContain("new.");
	}, 30_000);

	it("reports a crash of the supervised dnsmasq, and stops it on request", async () => {
		const status = await (await provisioner.api(`/dnses/${id}/status`, { method: "PUT", json: { on: true } })).json();
		expect(status.state).toBe("on");
		const pids = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" }).stdout.split("\n").filter(Boolean).map(Number);
		const ours = pids.filter((pid) => pid !== upstream?.pid);
		expect(ours).toHaveLength(1);
		process.kill(ours[0]!, "SIGKILL");
		const crashed = await eventually(async () => {
			const row = await (await provisioner.api(`/dnses/${id}`)).json();
			return row.state === "crashed" ? row : undefined;
		}, 10_000, "the crash reported");
		expect(crashed.stateReason).toContain("SIGKILL");
		const off = await (await provisioner.api(`/dnses/${id}/status`, { method: "PUT", json: { on: false } })).json();
		expect(off).toMatchObject({ on: false, state: "off" });
	}, 30_000);
});
