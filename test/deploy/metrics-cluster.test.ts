import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { eventually } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { freshPostgresDatabase, startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { startNats, type TestServer } from "../support/servers";

/**
 * Distributed mode: the gateway's /api/metrics carries the metrics of every node on the
 * transporter, not only its own — here a registry in its own OS process, as in Kubernetes.
 */
describe("/api/metrics across nodes (NATS)", () => {
	let nats: TestServer;
	let registry: ServiceProcess;
	let gateway: TestProvisioner;
	let dataDir: string;
	const registryNode = `metrics-registry-${process.pid}`;

	beforeAll(async () => {
		nats = await startNats();
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-metrics-"));
		const databaseUrl = await freshPostgresDatabase();
		registry = startServiceProcess(["start", "mainscripts"], { TRANSPORTER: nats.url, NODE_ID: registryNode, DATA_DIR: dataDir, DATABASE_URL: databaseUrl });
		gateway = await startTestProvisioner({ services: ["gateway"], env: { TRANSPORTER: nats.url } });
		// The gateway publishes the remote service's routes once it has heard of it over NATS.
		await eventually(
			async () => (await gateway.api("/mainscripts")).status === 200,
			30_000,
			"the remote mainscripts service behind the gateway",
		);
	}, 60_000);
	afterAll(async () => {
		await gateway?.stop();
		await registry?.stop();
		await nats?.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	it("labels each node's request counts and latencies with its nodeID", async () => {
		for (let i = 0; i < 2; i++) expect((await gateway.api("/mainscripts", { method: "POST", json: { text: `#!ipxe\necho ${i}` } })).status).toBe(201);
		const text = await (await gateway.api("/metrics")).text();
		const families = parsePrometheusTextFormat(text);
		const requests = families.find((f) => f.name === "moleculer_request_total")!;
		const byNode = (node: string) => requests.metrics.filter((m) => m.labels?.nodeID === node && m.labels?.action === "mainscripts.create");
		// The registry's node handled the action; the gateway's node made the remote call.
		expect(byNode(registryNode).reduce((sum, m) => sum + Number(m.value), 0)).toBeGreaterThanOrEqual(2);
		expect(byNode(gateway.broker.nodeID).some((m) => m.labels?.type === "remote")).toBe(true);
		expect(text).toMatch(new RegExp(`moleculer_request_time_count\\{[^}]*action="mainscripts.create"[^}]*nodeID="${registryNode}"[^}]*\\} [1-9]`));
		// One family per metric name, whatever the number of nodes.
		const typeLines = text.split("\n").filter((line) => line.startsWith("# TYPE "));
		expect(new Set(typeLines).size).toBe(typeLines.length);
	});
});
