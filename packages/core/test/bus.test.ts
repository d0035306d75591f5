import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError, RateLimiter, loadConfig, rateKeyOf, natsConnectionOptions, nodeIdOf, siteNodeId, siteOfNode, sitePermissions } from "../src";

describe("site node IDs: the site a node may act for is in its ID", () => {
	it("round-trips a site tag with dots through one NATS subject token", () => {
		const id = siteNodeId("felicitas.pojtinger.swabia.sol", "host.example-12");
		expect(id).toBe("site.felicitas~pojtinger~swabia~sol.host-example-12");
		expect(id.split(".")).toHaveLength(3);
		expect(siteOfNode(id)).toBe("felicitas.pojtinger.swabia.sol");
		for (const cluster of ["gateway-1", "site-a", "site.a", "site.a.b.c", "site.a.b*"]) expect(siteOfNode(cluster)).toBeNull();
	});

	it("puts a site process's NODE_ID inside its site's namespace, and leaves the cluster's alone", () => {
		expect(nodeIdOf({ nodeId: "pod-7", distributorArtifactId: null })).toBe("pod-7");
		expect(nodeIdOf({ nodeId: "pod-7", distributorArtifactId: "a.b" })).toBe("site.a~b.pod-7");
		expect(nodeIdOf({ nodeId: "site.a~b.pod-7", distributorArtifactId: "a.b" })).toBe("site.a~b.pod-7");
		// Another site's namespace is not kept: the ID names the configured site.
		expect(nodeIdOf({ nodeId: "site.c~d.pod-7", distributorArtifactId: "a.b" })).toBe("site.a~b.site-c-d-pod-7");
		expect(nodeIdOf({ nodeId: undefined, distributorArtifactId: "a.b" }, 1)).toBe(siteNodeId("a.b", `${os.hostname()}-1`));
	});

	it("lets a site subscribe to its own node subjects only, and publish no request", () => {
		const { publish, subscribe } = sitePermissions("a.b");
		expect(subscribe.allow).toContain("MOL-clusterplatform.*.site.a~b.>");
		expect(subscribe.allow.filter((s) => s.endsWith(">"))).toEqual(["MOL-clusterplatform.*.site.a~b.>"]);
		expect(publish.allow.some((s) => s.includes(".REQ"))).toBe(false);
		expect(publish.allow).toEqual(expect.arrayContaining(["MOL-clusterplatform.RES.>", "MOL-clusterplatform.EVENT.>", "MOL-clusterplatform.INFO"]));
	});
});

describe("bus configuration", () => {
	const base = { DATA_DIR: os.tmpdir() };

	it("takes the credential from NATS_USER/NATS_PASSWORD, a password file, or the URL, and TLS from tls:// or NATS_TLS_CA", () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bus-config-"));
		fs.writeFileSync(path.join(dir, "password"), "from-a-file\n");
		const fromFile = loadConfig({ ...base, TRANSPORTER: "nats://nats:4222", NATS_USER: "cluster", NATS_PASSWORD_FILE: path.join(dir, "password") });
		expect(natsConnectionOptions(fromFile)).toMatchObject({ servers: ["nats:4222"], user: "cluster", pass: "from-a-file" });
		expect(fromFile.bus.tls).toBeNull();
		const fromUrl = loadConfig({ ...base, TRANSPORTER: "tls://cluster:s3cret@nats:4222" });
		expect(natsConnectionOptions(fromUrl)).toMatchObject({ user: "cluster", pass: "s3cret", tls: {} });
		const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
		expect(natsConnectionOptions(loadConfig({ ...base, TRANSPORTER: "nats://nats:4222", NATS_TLS_CA: pem })).tls).toEqual({ ca: pem.trim() });
		expect(natsConnectionOptions(loadConfig({ ...base, TRANSPORTER: "nats://nats:4222", NATS_TLS_CA: "/etc/ca.pem" })).tls).toEqual({ caFile: "/etc/ca.pem" });
		expect(() => loadConfig({ ...base, NATS_PASSWORD_FILE: path.join(dir, "missing") })).toThrow(/NATS_PASSWORD_FILE: cannot read/);
		fs.rmSync(dir, { recursive: true, force: true });
	});

	it("refuses a site credential for another site, and names no password when the URL is bad", () => {
		expect(() => loadConfig({ ...base, TRANSPORTER: "nats://n:4222", NATS_USER: "site-a.b", CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: "c.d" })).toThrow(/another site's credential/);
		expect(() => loadConfig({ ...base, TRANSPORTER: "nats://n:4222", NATS_USER: "site-a.b" })).toThrow(ConfigError);
		expect(loadConfig({ ...base, TRANSPORTER: "nats://n:4222", NATS_USER: "site-a.b", CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: "a.b" }).bus.user).toBe("site-a.b");
		let message = "";
		try {
			loadConfig({ ...base, TRANSPORTER: "http://user:hunter2@n:4222" });
		} catch (err) {
			message = (err as Error).message;
		}
		expect(message).toMatch(/TRANSPORTER must be a nats:\/\/ or tls:\/\//);
		expect(message).not.toContain("hunter2");
	});
});

describe("RateLimiter", () => {
	it("grants a burst, then so many a second, per key, and forgets the oldest keys past its bound", () => {
		const limiter = new RateLimiter(3, 1, 2);
		const t = 1_000_000;
		expect([limiter.take("a", t), limiter.take("a", t), limiter.take("a", t)]).toEqual([0, 0, 0]);
		expect(limiter.take("a", t)).toBe(1);
		expect(limiter.take("a", t + 1000)).toBe(0);
		expect(limiter.take("b", t)).toBe(0);
		limiter.take("c", t);
		// "a" was the oldest of three keys with room for two: it starts full again.
		expect([limiter.take("a", t), limiter.take("a", t), limiter.take("a", t)]).toEqual([0, 0, 0]);
	});
});

describe("rateKeyOf", () => {
	it("counts an IPv4 client by its address and an IPv6 client by its /64, however spelt", () => {
		expect(rateKeyOf("192.0.2.7")).toBe("192.0.2.7");
		for (const spelling of ["2001:db8:1:2::1", "2001:db8:1:2:ffff:0:0:9", "2001:DB8:1:2::abcd%eth0", "2001:0db8:0001:0002::"]) expect(rateKeyOf(spelling)).toBe("2001:db8:1:2::/64");
		expect(rateKeyOf("::1")).toBe("0:0:0:0::/64");
		expect(rateKeyOf(undefined)).toBe("unknown");
	});
});

