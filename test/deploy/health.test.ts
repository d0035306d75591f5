import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { checkHealth } from "@clusterplatform/cli";
import { createBroker, loadConfig } from "@clusterplatform/core";
import { eventually } from "../support/ports";
import { REPO_ROOT, startServiceProcess, type ServiceProcess } from "../support/processes";
import { startTestProvisioner } from "../support/provisioner";
import { startNats, type TestServer } from "../support/servers";

const run = promisify(execFile);
const CLI = path.join(REPO_ROOT, "packages", "cli", "dist", "main.js");

/**
 * `clusterplatform health`, the probe of every container (Docker HEALTHCHECK, Kubernetes exec
 * probes): a NATS ping of the container's own node, or GET /api/health in in-process mode.
 */
describe("clusterplatform health (container probes)", () => {
	let nats: TestServer;
	let service: ServiceProcess | undefined;
	let dataDir: string;

	beforeAll(async () => {
		nats = await startNats();
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-health-"));
	});
	afterAll(async () => {
		await service?.kill();
		await nats?.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	it("a service process with no HTTP port is healthy while its node answers over NATS, and not once it is gone", async () => {
		const env = { TRANSPORTER: nats.url, NODE_ID: `health-target-${process.pid}`, DATA_DIR: dataDir, LOG_LEVEL: "warn" };
		// A node of the cluster that hears every node joining it, up before the others.
		const watcher = createBroker(loadConfig({ ...env, NODE_ID: `watcher-${process.pid}` }), { logger: false });
		const joined: string[] = [];
		watcher.createService({ name: "watcher", events: { "$node.connected"(ctx: any) { joined.push(ctx.params.node.id); } } });
		await watcher.start();
		service = startServiceProcess(["start", "mainscripts"], env);
		// The same command the probes run, in the container's environment.
		const probe = await eventually(
			async () => {
				const result = await run(process.execPath, [CLI, "health"], { env: { PATH: process.env.PATH, ...env }, timeout: 30_000 }).catch((err) => err);
				return result.code === undefined ? result : false;
			},
			30_000,
			"a passing health probe",
		);
		expect(probe.stdout).toMatch(/clusterplatform health: ok: node health-target-\d+ answered a ping/);
		// The probe pinged without joining: the cluster saw the service's node, never a probe's.
		await eventually(() => joined.includes(env.NODE_ID), 15_000, "the watcher hearing the service's node");
		await watcher.stop();
		expect(joined.filter((id) => id.includes("-probe-"))).toEqual([]);

		await service.kill();
		const after = await checkHealth(loadConfig(env), { timeoutMs: 2_000 });
		expect(after.ok).toBe(false);
		expect(after.detail).toMatch(/did not answer a ping/);
	});

	it("the CLI exits non-zero when the node does not answer", async () => {
		const env = { PATH: process.env.PATH, TRANSPORTER: nats.url, NODE_ID: "nobody-here", DATA_DIR: dataDir, LOG_LEVEL: "warn" };
		const failed = await run(process.execPath, [CLI, "health", "--timeout=2000"], { env, timeout: 30_000 }).catch((err) => err);
		expect(failed.code).toBe(1);
		expect(failed.stdout).toMatch(/FAILED: node nobody-here did not answer a ping/);
	});

	it("in-process mode probes the gateway's /api/health", async () => {
		const provisioner = await startTestProvisioner({ services: ["gateway"] });
		try {
			const ok = await checkHealth(provisioner.config);
			expect(ok).toEqual({ ok: true, detail: expect.stringContaining(`:${provisioner.port}/api/health: HTTP 200`) });
		} finally {
			await provisioner.stop();
		}
		const down = await checkHealth(provisioner.config, { timeoutMs: 2_000 });
		expect(down.ok).toBe(false);
	});
});
