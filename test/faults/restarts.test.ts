import fs from "node:fs";
import net from "node:net";
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
	/** When the request was sent and when its answer (or failure) came, by Date.now(). */
	startedAt: number;
	endedAt: number;
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
		const startedAt = Date.now();
		try {
			const res = await post(text);
			const body = await res.json().catch(() => ({}));
			outcomes.push({ text, status: res.status, id: res.status === 201 ? body.id : undefined, startedAt, endedAt: Date.now() });
		} catch (err) {
			outcomes.push({ text, status: (err as Error).name === "TimeoutError" ? "timeout" : "refused", startedAt, endedAt: Date.now() });
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

/** Whether something accepts TCP connections on 127.0.0.1:port (bounded: 1 s). */
function accepting(port: number): Promise<boolean> {
	return new Promise((resolve) => {
		const socket = net.connect({ host: "127.0.0.1", port });
		const done = (up: boolean) => {
			socket.destroy();
			resolve(up);
		};
		socket.setTimeout(1000, () => done(false));
		socket.once("connect", () => done(true));
		socket.once("error", () => done(false));
	});
}

/**
 * The server's outage as seen from outside, probed every 50 ms while `during` runs: the last moment
 * it was seen down and the first moment it was seen up again after that (null when never down).
 */
async function watchOutage(port: number, during: Promise<void>): Promise<{ lastDown: number; backUp: number } | null> {
	const probes: { at: number; up: boolean }[] = [];
	let finished = false;
	void during.finally(() => (finished = true));
	for (let i = 0; i < 2000 && !finished; i++) {
		probes.push({ at: Date.now(), up: await accepting(port) });
		await new Promise((r) => setTimeout(r, 50));
	}
	await during;
	probes.push({ at: Date.now(), up: await accepting(port) });
	const lastDownIndex = probes.findLastIndex((p) => !p.up);
	const backUp = probes.slice(lastDownIndex + 1).find((p) => p.up);
	return lastDownIndex >= 0 && backUp ? { lastDown: probes[lastDownIndex]!.at, backUp: backUp.at } : null;
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
		const [outcomes, outage] = await Promise.all([writeUnderTraffic(post, restart), watchOutage(nats.port, restart)]);
		// The outage was real (NATS refused connections, then took them again), and the traffic went
		// through it: a request failed, or was held from while NATS was down until it was back.
		expect(outage).not.toBeNull();
		const crossed = outcomes.filter((o) => o.status !== 201 || (o.startedAt <= outage!.lastDown && o.endedAt >= outage!.backUp));
		const longest = Math.max(...crossed.map((o) => o.endedAt - o.startedAt));
		console.log(`NATS outage: ${crossed.length} of ${outcomes.length} requests failed or were held across it (the longest took ${longest} ms)`);
		expect(crossed.length).toBeGreaterThan(0);
		await eventually(async () => (await post("#!ipxe\necho after")).status === 201, 45_000, "a write through NATS after its restart");
		await expectAcknowledgedRowsKept(outcomes, (id) => fetch(`${baseUrl}/mainscripts/${id}`));
		expect(gateway.output()).not.toMatch(/FATAL|Unhandled/i);
		expect(registries.output()).not.toMatch(/FATAL|Unhandled/i);
	});
});
