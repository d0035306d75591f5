import { generateToken, tokenEntry } from "@clusterplatform/core";
import { MACHINE_PATH } from "@clusterplatform/gateway";
import { startTestProvisioner, TEST_ADMIN_TOKEN, type TestProvisioner } from "../support/provisioner";

/**
 * Who may call what, over every operation the gateway serves (from its OpenAPI document): without
 * a token only the machine path answers; a read-only token reads but changes nothing; a wrong
 * token is refused like none.
 */
describe("access to every operation", () => {
	let provisioner: TestProvisioner;
	let operations: { method: string; path: string; action: string }[];
	const readToken = generateToken();

	beforeAll(async () => {
		provisioner = await startTestProvisioner({
			env: { API_TOKENS: [tokenEntry("admin", TEST_ADMIN_TOKEN, false), tokenEntry("viewer", readToken, true)].join(",") },
		});
		const doc = await (await provisioner.api("/openapi.json")).json();
		operations = Object.entries(doc.paths as Record<string, Record<string, { operationId?: string; "x-moleculer-action"?: string }>>).flatMap(([path, methods]) =>
			Object.entries(methods).map(([method, op]) => ({ method: method.toUpperCase(), path: path.replace(/\{[^}]+\}/g, "1"), action: op["x-moleculer-action"] ?? "" })),
		).filter((op) => !op.path.startsWith("/api/artifacts")); // read-only downloads, open by design (tested with the builders)
	}, 60_000);
	afterAll(() => provisioner?.stop());

	const call = (method: string, path: string, token?: string) =>
		fetch(`${provisioner.baseUrl}${path}`, {
			method,
			headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(method === "POST" || method === "PUT" ? { "Content-Type": "application/json" } : {}) },
			body: method === "POST" || method === "PUT" ? "{}" : undefined,
		});

	it("knows which action each operation runs", () => {
		expect(operations.length).toBeGreaterThanOrEqual(30);
		for (const op of operations) expect(op.action).toMatch(/^[a-z-]+\.[A-Za-z]+$/);
	});

	it("refuses every operation outside the machine path to a caller without a token, or with a wrong one", async () => {
		const open: string[] = [];
		for (const op of operations) {
			const machine = MACHINE_PATH[op.action]?.includes(op.method) ?? false;
			for (const token of [undefined, "cpp_not-a-token"]) {
				const res = await call(op.method, op.path, token);
				if (machine && token === undefined) expect({ op, status: res.status }).not.toEqual({ op, status: 401 });
				else if (res.status !== 401) open.push(`${op.method} ${op.path} (${op.action}) answered ${res.status} to ${token ? "a wrong token" : "no token"}`);
			}
		}
		expect(open).toEqual([]);
	});

	it("lets a read-only token read everything and change nothing", async () => {
		// A GET that makes a new private key (and costs a core for a second) is an admin's.
		const ADMIN_ONLY_READS = ["sshkey.generate"];
		const problems: string[] = [];
		for (const op of operations) {
			const res = await call(op.method, op.path, readToken);
			if (ADMIN_ONLY_READS.includes(op.action)) {
				if (res.status !== 403) problems.push(`GET ${op.path} (${op.action}) answered ${res.status} to the read-only token`);
				continue;
			}
			if (op.method === "GET" && (res.status === 401 || res.status === 403)) problems.push(`GET ${op.path} refused to the read-only token: ${res.status}`);
			if (op.method !== "GET" && res.status !== 403) problems.push(`${op.method} ${op.path} answered ${res.status} to the read-only token`);
		}
		expect(problems).toEqual([]);
	});

	it("keeps the machine path open: a booting host's fetches and a node's registration", async () => {
		const created = await (await provisioner.api("/mainscripts", { method: "POST", json: { text: "#!ipxe\necho boot" } })).json();
		expect(await (await fetch(`${provisioner.baseUrl}/api/mainscripts/${created.id}`)).text()).toBe("#!ipxe\necho boot");
		expect((await fetch(`${provisioner.baseUrl}/api/localnodes?ip=10.0.0.9&artifactId=site.open&pingable=true`, { method: "POST" })).status).toBe(201);
		// …but a node cannot list the others, or change or delete itself.
		expect((await fetch(`${provisioner.baseUrl}/api/localnodes`)).status).toBe(401);
		expect((await fetch(`${provisioner.baseUrl}/api/localnodes/1`, { method: "DELETE" })).status).toBe(401);
	});
});
