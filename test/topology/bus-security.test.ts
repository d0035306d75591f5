import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import { connect } from "nats";
import { utils } from "ssh2";
import { createBroker, loadConfig } from "@clusterplatform/core";
import { DistributorWorkerService, DistributorsService, WORKER_SERVICE } from "@clusterplatform/distributor";
import { SshkeysService } from "@clusterplatform/sshkeys";
import { TunnelClientService, TunnelsService } from "@clusterplatform/tunnels";
import { eventually } from "../support/ports";
import { startProcess } from "../support/processes";
import { startSecureNats, type SecureNats } from "../support/servers";

const SITE_A = "a.bus.example";
const SITE_B = "b.bus.example";
const ADMIN = { meta: { caller: { name: "operator", readOnly: false } } };
const IMPOSTOR = path.join(__dirname, "..", "support", "fixtures", "site-impostor.js");
const SCRIPT_RUN = { ip: "192.0.2.7", port: 22, script: "id", privateKey: "k", expectedHostKey: `SHA256:${"A".repeat(43)}`, timeoutMs: 5000 };

/**
 * The bus as the manifests run it (nats-server with TLS and a credential per site, made with the
 * CLI's `bus user`), attacked the way the security review did: joining without credentials, and
 * holding one site's credential while reaching for another site's private key, tunnel password and
 * scripts.
 */
describe("the service bus: TLS, credentials, and what one site's credential reaches", () => {
	let nats: SecureNats;
	let cluster: ServiceBroker;
	const others: ServiceBroker[] = [];
	const dirs: string[] = [];
	const dataDir = () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bus-"));
		dirs.push(dir);
		return dir;
	};
	const siteBroker = async (env: Record<string, string>, services: ServiceSchema[]) => {
		const broker = createBroker(loadConfig({ DATA_DIR: dataDir(), LOG_LEVEL: "fatal", ...env }), { logger: false });
		for (const schema of services) broker.createService(schema);
		others.push(broker);
		await broker.start();
		return broker;
	};
	let tunnelOfB: number;

	beforeAll(async () => {
		nats = await startSecureNats([SITE_A, SITE_B]);
		cluster = createBroker(loadConfig({ ...nats.env(null), DATA_DIR: dataDir(), LOG_LEVEL: "fatal", PUBLIC_URL: "http://127.0.0.1:9", NODE_ID: "cluster-core" }), { logger: false });
		for (const schema of [SshkeysService, TunnelsService, DistributorsService]) cluster.createService(schema);
		await cluster.start();
		await cluster.call("sshkeys.create", { artifactId: SITE_B, private: true, text: utils.generateKeyPairSync("ed25519").private }, ADMIN);
		tunnelOfB = ((await cluster.call("tunnels.create", { artifactId: SITE_B, target: "127.0.0.1:9" }, ADMIN)) as { id: number }).id;
	}, 60_000);

	afterAll(async () => {
		for (const broker of others) await broker.stop().catch(() => undefined);
		await cluster?.stop();
		await nats?.stop();
		for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	it("refuses a connection without credentials, with a wrong password, or without TLS", async () => {
		const servers = `127.0.0.1:${nats.port}`;
		const tls = { caFile: nats.caFile };
		const { NATS_USER: user, NATS_PASSWORD: pass } = nats.env(SITE_A);
		await expect(connect({ servers, tls, reconnect: false, timeout: 5000 })).rejects.toThrow(/Authorization Violation/i);
		await expect(connect({ servers, tls, user, pass: `${pass}x`, reconnect: false, timeout: 5000 })).rejects.toThrow(/Authorization Violation/i);
		// Plain text: the server insists on TLS, and a client that does not trust its CA cannot proceed.
		await expect(connect({ servers, user, pass, reconnect: false, timeout: 5000 })).rejects.toThrow();
		const good = await connect({ servers, tls, user, pass, reconnect: false, timeout: 5000 });
		await good.close();
	});

	it("lets a site's credential read only its own nodes' subjects", async () => {
		const { NATS_USER: user, NATS_PASSWORD: pass } = nats.env(SITE_A);
		const conn = await connect({ servers: `127.0.0.1:${nats.port}`, tls: { caFile: nats.caFile }, user, pass, reconnect: false });
		try {
			const refused = async (subject: string) => {
				const sub = conn.subscribe(subject);
				await expect((async () => {
					for await (const _ of sub) return "delivered";
					return "closed";
				})()).rejects.toThrow(/Permissions Violation/i);
			};
			await refused("MOL-clusterplatform.>");
			await refused("MOL-clusterplatform.REQ.site.b~bus~example.anything");
			await refused(`MOL-clusterplatform.RES.${cluster.nodeID}`);
		} finally {
			await conn.close().catch(() => undefined);
		}
	});

	it("survives a site announcing a cluster process's own node ID (Moleculer would stop the process)", async () => {
		const { NATS_USER: user, NATS_PASSWORD: pass } = nats.env(SITE_A);
		const conn = await connect({ servers: `127.0.0.1:${nats.port}`, tls: { caFile: nats.caFile }, user, pass, reconnect: false });
		const forged = { ver: cluster.PROTOCOL_VERSION, sender: cluster.nodeID, instanceID: "forged", services: [], config: {}, ipList: [], hostname: "x", client: { type: "nodejs", version: "0", langVersion: "0" }, seq: 99, metadata: {} };
		conn.publish("MOL-clusterplatform.INFO", Buffer.from(JSON.stringify(forged)));
		await conn.flush();
		await conn.close();
		await new Promise((r) => setTimeout(r, 1000));
		// Still running (jest would report process.exit), still answering.
		expect(((await cluster.call("tunnels.get", { id: tunnelOfB })) as { id: number }).id).toBe(tunnelOfB);
	});

	it("gives a site's process no way to call the cluster: another site's key and tunnel password stay out of reach", async () => {
		const siteA = await siteBroker({ ...nats.env(SITE_A), CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE_A }, []);
		expect(siteA.nodeID).toMatch(/^site\.a~bus~example\./);
		await eventually(() => siteA.registry.getActionEndpoints("sshkeys.privateKey")?.hasAvailable(), 15_000, "the site seeing the cluster's actions");
		const attempts = [
			siteA.call("sshkeys.privateKey", { artifactId: SITE_B }, { timeout: 3000 }),
			siteA.call("tunnels.siteTunnels", { artifactId: SITE_B }, { timeout: 3000 }),
			siteA.call("sshkeys.get", { id: 1 }, { timeout: 3000, meta: ADMIN.meta }),
			siteA.call("$node.list", {}, { nodeID: cluster.nodeID, timeout: 3000 }),
		];
		for (const attempt of attempts) await expect(attempt).rejects.toThrow(/timed out|Request timeout/i);
		await siteA.stop();
	}, 30_000);

	it("sends nothing of site B to a node of site A that claims to be B's distributor", async () => {
		const received: unknown[] = [];
		const impostor: ServiceSchema = {
			name: WORKER_SERVICE,
			metadata: { artifactId: SITE_B, identity: "impostor" },
			actions: {
				status: () => ({ identity: "impostor", artifactId: SITE_B, configured: false, settings: null, on: false, state: "off", reason: null }),
				runScript: (ctx) => void received.push(ctx.params),
			},
		};
		// It also offers the cluster's own services: a cluster process without them locally (every pod in
		// Kubernetes) would balance its calls — private keys, site lookups — onto it.
		const clusterServices: ServiceSchema[] = ["sshkeys", "distributors", "enrolments", "localnodes"].map((name) => ({
			name,
			actions: Object.fromEntries(["create", "privateKey", "siteNode", "check", "script"].map((action) => [action, (ctx: { params: unknown }) => void received.push({ [`${name}.${action}`]: ctx.params })])),
		}));
		// Its node ID names site A, as its credential lets it: the manager does not take it for B's.
		const underOwnName = await siteBroker({ ...nats.env(SITE_A), CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE_A }, [impostor, ...clusterServices]);
		const gateway = await siteBroker({ ...nats.env(null), NODE_ID: "cluster-gateway" }, []);
		await eventually(() => cluster.registry.getServiceList({ onlyAvailable: true }).some((s: { nodeID: string }) => s.nodeID === underOwnName.nodeID), 15_000, "the cluster seeing the impostor");
		await eventually(() => gateway.registry.getServiceList({ onlyAvailable: true }).some((s: { nodeID: string }) => s.nodeID === underOwnName.nodeID), 15_000, "the gateway seeing the impostor");
		await cluster.call("distributors.list", {});
		await expect(cluster.call("distributors.siteNode", { artifactId: SITE_B })).rejects.toThrow(/no distributor for site/);
		const offered = gateway.registry.getServiceList({ onlyAvailable: true }).filter((s: { nodeID: string }) => s.nodeID === underOwnName.nodeID).map((s: { name: string }) => s.name);
		expect(offered.sort()).toEqual(["$node", WORKER_SERVICE]);
		for (let i = 0; i < 6; i++) {
			await gateway.call("sshkeys.create", { artifactId: SITE_B, private: true, text: utils.generateKeyPairSync("ed25519").private }, ADMIN);
			await expect(gateway.call("distributors.siteNode", { artifactId: SITE_B })).rejects.toThrow(/no distributor for site/);
		}
		expect(received).toEqual([]);
		await gateway.stop();
		await underOwnName.stop();
		// Its node ID names site B: NATS keeps B's subjects from A's credential, so what is sent there never
		// arrives. (Its own process: the bus refuses its subscriptions, and its NATS client never stops cleanly.)
		const underBsName = startProcess(IMPOSTOR, { ...nats.env(SITE_A), CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE_B, NODE_ID: "impostor", DATA_DIR: dataDir() });
		try {
			const { nodeID } = await eventually(() => cluster.call<{ nodeID: string }, object>("distributors.siteNode", { artifactId: SITE_B }).catch(() => undefined), 20_000, "the impostor listed");
			expect(nodeID).toBe("site.b~bus~example.impostor");
			await expect(cluster.call(`${WORKER_SERVICE}.runScript`, SCRIPT_RUN, { nodeID, timeout: 3000 })).rejects.toThrow(/timed out|Request timeout/i);
			expect(underBsName.output()).toContain("STARTED site.b~bus~example.impostor");
			expect(underBsName.output()).not.toContain("RECEIVED");
		} finally {
			await underBsName.kill();
		}
	}, 60_000);

	it("runs a site's own distributor and tunnel-client: commands reach it, its events come back, only its grants are handed to it", async () => {
		const tunnelOfA = ((await cluster.call("tunnels.create", { artifactId: SITE_A, target: "127.0.0.1:9" }, ADMIN)) as { id: number }).id;
		const siteA = await siteBroker({ ...nats.env(SITE_A), CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE_A }, [DistributorWorkerService, TunnelClientService]);
		const { nodeID } = await eventually(() => cluster.call<{ nodeID: string }, object>("distributors.siteNode", { artifactId: SITE_A }).catch(() => undefined), 20_000, "site A's distributor online");
		expect(nodeID).toBe(siteA.nodeID);
		await expect(cluster.call(`${WORKER_SERVICE}.status`, {}, { nodeID })).resolves.toMatchObject({ artifactId: SITE_A });
		const links = (siteA.getLocalService("tunnel-client") as unknown as { links: Map<number, unknown> }).links;
		await eventually(() => links.has(tunnelOfA), 30_000, "site A's tunnel handed to its client");
		expect([...links.keys()]).toEqual([tunnelOfA]);
		expect(links.has(tunnelOfB)).toBe(false);
		// No tunnel-server runs: the client's problem comes back as an event, to A's row only.
		await eventually(async () => ((await cluster.call("tunnels.get", { id: tunnelOfA })) as { statusReason: string | null }).statusReason, 30_000, "site A's problem recorded");
		expect(((await cluster.call("tunnels.get", { id: tunnelOfB })) as { statusReason: string | null }).statusReason).toBeNull();
		await siteA.stop();
	}, 90_000);
});
