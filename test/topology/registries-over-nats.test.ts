import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { freshPostgresDatabase } from "../support/provisioner";
import { eventually, freePort } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { performSeedCall, seedCallsFor, seedTutorialPath, type SeedCall } from "../support/seed";
import { startNats, type TestServer } from "../support/servers";

const REGISTRIES = ["mainscripts", "subscripts", "kickstarts", "prebootscripts", "postbootscripts", "sshkeys", "sshkey", "localnodes"];
const seedFile = seedTutorialPath();
const describeWithSeed = seedFile ? describe : describe.skip;
if (!seedFile) console.warn("skipped: ../shared/seeds/000_*.txt not found beside the checkout — the seed replay over NATS did not run");

/** The seed's calls that concern the registries (builders and distributors have their own tests). */
function registryCalls(calls: SeedCall[]): SeedCall[] {
	return calls.filter((call) => {
		const [, api, resource, , action] = new URL(call.url).pathname.split("/");
		return api === "api" && REGISTRIES.includes(resource ?? "") && action === undefined;
	});
}

describeWithSeed("registries and gateway as separate processes over NATS with PostgreSQL", () => {
	let nats: TestServer;
	let gateway: ServiceProcess;
	let registries: ServiceProcess;
	let baseUrl: string;
	let env: Record<string, string>;
	const token = generateToken();
	const dataDirs: string[] = [];

	const dataDir = () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-topology-"));
		dataDirs.push(dir);
		return dir;
	};
	const startRegistries = () => startServiceProcess(["start", ...REGISTRIES], { ...env, DATA_DIR: dataDir(), NODE_ID: `registries-${Date.now()}` });
	const authorized = (path: string) => fetch(`${baseUrl}/api${path}`, { headers: { Authorization: `Bearer ${token}` } });
	const registriesServed = () => eventually(async () => (await authorized("/localnodes")).status === 200, 30_000, "registries reachable through the gateway");

	beforeAll(async () => {
		nats = await startNats();
		const port = await freePort();
		baseUrl = `http://127.0.0.1:${port}`;
		env = { TRANSPORTER: nats.url, DATABASE_URL: await freshPostgresDatabase(), PUBLIC_URL: baseUrl };
		gateway = startServiceProcess(["start", "gateway"], { ...env, API_TOKENS: tokenEntry("operator", token, false), PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dataDir(), NODE_ID: "gateway" });
		registries = startRegistries();
		await registriesServed();
	}, 60_000);

	afterAll(async () => {
		await Promise.all([gateway?.stop(), registries?.stop()]);
		await nats?.stop();
		for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	/** What the seed's post-boot script does on an installed node: POST /api/localnodes?ip=…&artifactId=… */
	async function runPostBootRegistration(postbootscript: string, ip: string): Promise<Response> {
		const line = postbootscript.split("\n").find((l) => l.includes("/api/localnodes?"));
		const url = /"(http[^"]+)"/.exec(line ?? "")?.[1];
		if (!url) throw new Error("the seed's post-boot script no longer registers the node");
		return fetch(url.replace("${ip}", ip), { method: "POST" });
	}

	it("replays every registry call of the seed tutorial, with a node registering as its post-boot script does", async () => {
		const calls = registryCalls(seedCallsFor(baseUrl, fs.readFileSync(seedFile!, "utf8")));
		// The tutorial creates, generates and reads back: mainscript, subscript, key pair, keys, kickstart, scripts, nodes.
		expect(calls.length).toBeGreaterThanOrEqual(16);
		const created: Record<string, { text: string }[]> = {};
		for (const call of calls) {
			const resource = new URL(call.url).pathname.split("/")[2]!;
			if (resource === "localnodes" && !created.localnodes) {
				// The host has installed and run its post-boot script by now.
				const registration = await runPostBootRegistration(created.postbootscripts![0]!.text, "192.168.178.152");
				expect(registration.status).toBe(201);
				created.localnodes = [];
			}
			const res = await performSeedCall(call, token);
			const body = await res.text();
			const what = `${call.method} ${call.url} (${call.title})`;
			expect({ what, status: res.status }).toEqual({ what, status: call.method === "POST" ? 201 : 200 });
			if (call.method === "POST") (created[resource] ??= []).push(call.body as { text: string });
			if (resource === "sshkey") expect(JSON.parse(body).publicKey).toMatch(/^ecdsa-sha2-nistp256 /);
			if (resource === "localnodes") {
				const nodes = JSON.parse(body);
				expect(nodes.rows ?? [nodes]).toEqual([expect.objectContaining({ id: 1, ip: "192.168.178.152", artifactId: "felicitas.pojtinger.swabia.sol", pingable: true })]);
			} else if (call.method === "GET" && /\/\d+$/.test(call.url)) {
				// GET /api/<registry>/N answers the raw text that the tutorial POSTed as the N-th row.
				const index = Number(call.url.split("/").pop()) - 1;
				expect(body).toBe(created[resource]![index]!.text);
			}
		}
		expect(Object.keys(created).sort()).toEqual(["kickstarts", "localnodes", "mainscripts", "postbootscripts", "prebootscripts", "sshkeys", "subscripts"]);
		// Booting hosts fetch without a token; anything that changes state needs one.
		for (const registry of ["mainscripts", "subscripts", "kickstarts", "prebootscripts", "postbootscripts"]) {
			const res = await fetch(`${baseUrl}/api/${registry}/1`);
			expect({ registry, status: res.status, text: await res.text() }).toEqual({ registry, status: 200, text: created[registry]![0]!.text });
		}
		expect((await fetch(`${baseUrl}/api/sshkeys/2`)).status).toBe(403);
		const anonymous = await performSeedCall(calls.find((call) => call.method === "POST" && call.url.endsWith("/mainscripts"))!);
		expect(anonymous.status).toBe(401);
		expect((await fetch(`${baseUrl}/api/mainscripts`)).status).toBe(401);
	});

	it("loses nothing when the registries process is killed and started again", async () => {
		const before = await (await authorized("/mainscripts")).json();
		expect(before.total).toBeGreaterThan(0);
		await registries.kill();
		await eventually(async () => (await authorized("/mainscripts")).status >= 500 || undefined, 20_000, "gateway notices the registries are gone");
		registries = startRegistries();
		await registriesServed();
		const after = await (await authorized("/mainscripts")).json();
		expect(after.rows).toEqual(before.rows);
		expect(await (await fetch(`${baseUrl}/api/mainscripts/1`)).text()).toBe(before.rows.find((r: { id: number }) => r.id === 1).text);
	});
});
