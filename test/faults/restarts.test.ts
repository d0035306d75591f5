import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { freshPostgresDatabase, startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { eventually, freePort } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { startNats, startPostgres, type PostgresServer } from "../support/servers";

interface Outcome {
	text: string;
	status: number | "timeout" | "refused";
	id?: number;
}

/**
 * Writes rows one after another for as long as `during` runs (bounded by `maxRequests`), each
 * request bounded in time; returns what each request got.
 */
async function writeUnderTraffic(post: (text: string) => Promise<Response>, during: Promise<void>, maxRequests = 2000): Promise<Outcome[]> {
	const outcomes: Outcome[] = [];
	let finished = false;
	void during.finally(() => (finished = true));
	for (let i = 0; i < maxRequests && !finished; i++) {
		const text = `#!ipxe\necho traffic ${i}`;
		try {
			const res = await post(text);
			const body = await res.json().catch(() => ({}));
			outcomes.push({ text, status: res.status, id: res.status === 201 ? body.id : undefined });
		} catch (err) {
			outcomes.push({ text, status: (err as Error).name === "TimeoutError" ? "timeout" : "refused" });
			await new Promise((r) => setTimeout(r, 50));
		}
	}
	await during;
	return outcomes;
}

async function expectAcknowledgedRowsKept(outcomes: Outcome[], get: (id: number) => Promise<Response>): Promise<void> {
	const acknowledged = outcomes.filter((o) => o.status === 201);
	expect(acknowledged.length).toBeGreaterThan(0);
	for (const { id, text } of acknowledged) expect(await (await get(id!)).text()).toBe(text);
	// Nothing answered 2xx other than 201, and nothing crashed into a 2xx with a wrong body.
	expect(outcomes.filter((o) => typeof o.status === "number" && o.status < 300 && o.status !== 201)).toEqual([]);
}

describe("PostgreSQL restarted under traffic", () => {
	let postgres: PostgresServer;
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		postgres = await startPostgres();
		provisioner = await startTestProvisioner({ services: ["gateway", "mainscripts"], env: { DATABASE_URL: await postgres.createDatabase("faults") } });
	});
	afterAll(async () => {
		await provisioner?.stop();
		await postgres?.stop();
	});

	it("keeps every acknowledged row and serves again once the database is back", async () => {
		const post = (text: string) => provisioner.api("/mainscripts", { method: "POST", json: { text }, signal: AbortSignal.timeout(15_000) });
		const restart = (async () => {
			await new Promise((r) => setTimeout(r, 1500));
			await postgres.restart(2000);
			await new Promise((r) => setTimeout(r, 3000));
		})();
		const outcomes = await writeUnderTraffic(post, restart);
		const failed = outcomes.filter((o) => o.status !== 201);
		expect(failed.length).toBeGreaterThan(0); // the outage was real
		for (const o of failed) expect(o.status === "timeout" || o.status === "refused" || (o.status as number) >= 500).toBe(true);
		// Reconnected: writes succeed again without restarting the service.
		await eventually(async () => (await post("#!ipxe\necho after")).status === 201, 30_000, "a write after the restart");
		await expectAcknowledgedRowsKept(outcomes, (id) => provisioner.api(`/mainscripts/${id}`));
	});
});

describe("NATS restarted under traffic between the gateway and the registries", () => {
	let nats: Awaited<ReturnType<typeof startNats>>;
	let gateway: ServiceProcess;
	let registries: ServiceProcess;
	let baseUrl: string;
	const token = generateToken();
	const dirs: string[] = [];
	const dataDir = () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-faults-"));
		dirs.push(dir);
		return dir;
	};
	const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };

	beforeAll(async () => {
		nats = await startNats();
		const port = await freePort();
		baseUrl = `http://127.0.0.1:${port}/api`;
		const env = { TRANSPORTER: nats.url, DATABASE_URL: await freshPostgresDatabase(), API_TOKENS: tokenEntry("faults", token, false) };
		gateway = startServiceProcess(["start", "gateway"], { ...env, PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dataDir(), NODE_ID: "faults-gateway" });
		registries = startServiceProcess(["start", "mainscripts"], { ...env, DATA_DIR: dataDir(), NODE_ID: "faults-registries" });
		await eventually(async () => (await fetch(`${baseUrl}/mainscripts`, { headers })).status === 200, 30_000, "mainscripts through the gateway");
	}, 60_000);
	afterAll(async () => {
		await Promise.all([gateway?.stop(), registries?.stop()]);
		await nats?.stop();
		for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	it("reconnects both sides and keeps every acknowledged row", async () => {
		const post = (text: string) => fetch(`${baseUrl}/mainscripts`, { method: "POST", headers, body: JSON.stringify({ text }), signal: AbortSignal.timeout(15_000) });
		const restart = (async () => {
			await new Promise((r) => setTimeout(r, 1500));
			await nats.restart(2000);
			await new Promise((r) => setTimeout(r, 3000));
		})();
		const outcomes = await writeUnderTraffic(post, restart);
		await eventually(async () => (await post("#!ipxe\necho after")).status === 201, 45_000, "a write through NATS after its restart");
		await expectAcknowledgedRowsKept(outcomes, (id) => fetch(`${baseUrl}/mainscripts/${id}`));
		expect(gateway.output()).not.toMatch(/FATAL|Unhandled/i);
		expect(registries.output()).not.toMatch(/FATAL|Unhandled/i);
	});
});
