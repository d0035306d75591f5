import fs from "node:fs";
import path from "node:path";
import { Validator } from "@seriousme/openapi-schema-validator";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { CATALOGUE } from "@clusterplatform/cli";
import { buildOpenApiDocument, insomniaExport, mergeNodeMetrics, openApiPath, renderPrometheus, type InsomniaResource, type OpenApiDocument } from "@clusterplatform/gateway";
import { apiServiceNames, defaultSeedFile, liveOpenApiDocument, seedExamples, serializeWorkspace, WORKSPACE_FILE } from "../../insomnia/generate";
import { startTestProvisioner, type TestProvisioner } from "../support/provisioner";

const ROOT = path.resolve(__dirname, "..", "..");
const METHODS = ["get", "post", "put", "patch", "delete"];

/**
 * Strict exposition-format check the parser does not make: every sample belongs to the family
 * declared before it (histograms: _bucket, _sum, _count), and each family is declared once.
 */
function exposition(text: string): string[] {
	const problems: string[] = [];
	const declared = new Set<string>();
	let family = "";
	let type = "";
	for (const line of text.split("\n")) {
		if (line === "" || line.startsWith("# HELP")) continue;
		const typed = /^# TYPE (\S+) (\S+)$/.exec(line);
		if (typed) {
			[family, type] = [typed[1]!, typed[2]!];
			if (declared.has(family)) problems.push(`family ${family} declared twice`);
			declared.add(family);
			continue;
		}
		const name = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
		if (!name) {
			problems.push(`not a sample: ${line}`);
			continue;
		}
		const allowed = type === "histogram" ? [`${family}_bucket`, `${family}_sum`, `${family}_count`] : [family];
		if (!allowed.includes(name[1]!)) problems.push(`${name[1]} inside family ${family} (${type})`);
		if (Number.isNaN(Number(name[3])) && name[3] !== "NaN") problems.push(`bad value: ${line}`);
	}
	return problems;
}

/** The operation of `doc` that a concrete request path would reach, if any. */
function documentedOperation(doc: OpenApiDocument, method: string, urlPath: string): string | null {
	for (const [template, operations] of Object.entries(doc.paths)) {
		const pattern = new RegExp(`^${template.replace(/[.]/g, "\\.").replace(/\{key\}/, ".+").replace(/\{[^}]+\}/g, "[^/]+")}$`);
		if (pattern.test(urlPath) && operations[method.toLowerCase()]) return `${method} ${template}`;
	}
	return null;
}

describe("gateway: OpenAPI, Insomnia workspace and Prometheus metrics", () => {
	let provisioner: TestProvisioner;
	let doc: OpenApiDocument;
	const services = apiServiceNames();

	beforeAll(async () => {
		// Auth off here: the document without security; the auth-on document is checked on its own below.
		provisioner = await startTestProvisioner({ services, env: { AUTH: "off" } });
		const response = await provisioner.api("/openapi.json");
		expect(response.status).toBe(200);
		doc = (await response.json()) as OpenApiDocument;
	});
	afterAll(() => provisioner?.stop());

	describe("/api/openapi.json", () => {
		it("is a valid OpenAPI 3 document", async () => {
			const result = await new Validator().validate(doc as never);
			expect(result.errors ?? []).toEqual([]);
			expect(result.valid).toBe(true);
		});

		it("the validator rejects a broken document (negative control)", async () => {
			const broken = JSON.parse(JSON.stringify(doc));
			broken.paths["/api/mainscripts"].get.responses = "none";
			delete broken.info;
			const result = await new Validator().validate(broken);
			expect(result.valid).toBe(false);
		});

		it("documents every route the gateway serves, and nothing else", () => {
			const gateway = provisioner.broker.getLocalService("gateway") as unknown as { aliases: { method: string; fullPath: string; action: string | null }[] };
			const served = gateway.aliases.filter((a) => a.action).map((a) => `${a.method.toLowerCase()} ${openApiPath(a.fullPath)}`);
			expect(served.length).toBeGreaterThan(5);
			const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).filter((m) => METHODS.includes(m)).map((m) => `${m} ${p}`));
			expect(documented.filter((d) => !d.includes("/api/artifacts/")).sort()).toEqual([...new Set(served)].sort());
			expect(doc.paths["/api/artifacts/{key}"]?.get).toBeDefined();
		});

		it("every service in the catalogue with REST routes has its routes documented", () => {
			const tags = new Set(doc.tags.map((t) => t.name));
			for (const name of services.filter((n) => n !== "gateway")) expect(tags).toContain(name);
			expect(Object.keys(CATALOGUE)).toEqual(expect.arrayContaining(services));
		});

		it("describes parameters from the action rules: path ids, strict JSON bodies with required fields", () => {
			const get = doc.paths["/api/mainscripts/{id}"]!.get as any;
			expect(get.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: "id", in: "path", required: true, schema: expect.objectContaining({ type: "integer", minimum: 1 }) })]));
			expect(get.parameters.filter((p: any) => p.required)).toHaveLength(1);
			const create = doc.paths["/api/mainscripts"]!.post as any;
			const body = create.requestBody.content["application/json"].schema;
			expect(body).toMatchObject({ type: "object", required: ["text"], additionalProperties: false, properties: { text: { type: "string" } } });
		});

		it("says which calls need a bearer token when auth is on, and none when it is off", async () => {
			expect(doc.security).toBeUndefined();
			const secured = await liveOpenApiDocument();
			expect(secured.security).toEqual([{ bearerAuth: [] }]);
			expect((secured.components as any).securitySchemes.bearerAuth).toEqual({ type: "http", scheme: "bearer" });
			expect((secured.paths["/api/mainscripts/{id}"]!.get as any).security).toEqual([{}, { bearerAuth: [] }]);
			expect((secured.paths["/api/mainscripts/{id}"]!.put as any).security).toBeUndefined();
			expect((await new Validator().validate(secured as never)).valid).toBe(true);
		}, 60_000);

		it("documents every call of the seed tutorial whose service this build has", () => {
			const seed = defaultSeedFile(ROOT);
			if (!seed) {
				console.warn("SKIPPED seed coverage: ../shared/seeds/000_*.txt is not beside this checkout");
				return;
			}
			const calls = seedExamples(seed);
			expect(calls.length).toBeGreaterThan(20);
			const missing: string[] = [];
			const absentServices = new Set<string>();
			for (const call of calls) {
				const service = call.path.split("/")[2]!;
				if (!services.includes(service)) {
					absentServices.add(service);
					continue;
				}
				if (!documentedOperation(doc, call.method, call.path)) missing.push(`${call.method} ${call.path} (${call.title})`);
			}
			if (absentServices.size) console.warn(`seed calls not checked, services not in this build: ${[...absentServices].join(", ")}`);
			expect(missing).toEqual([]);
		});

		it("every documented collection answers (live check of the table)", async () => {
			const collections = Object.keys(doc.paths).filter((p) => !p.includes("{") && doc.paths[p]!.get && !/metrics|sshkey$/.test(p));
			for (const collection of collections) {
				const response = await fetch(`${provisioner.baseUrl}${collection}`);
				expect({ collection, status: response.status }).toEqual({ collection, status: 200 });
			}
		});
	});

	describe("insomnia/workspace.json", () => {
		let workspace: ReturnType<typeof insomniaExport>;
		beforeAll(() => {
			workspace = insomniaExport(doc, seedExamples(defaultSeedFile(ROOT)));
		});

		it("follows Insomnia's v4 importer rules: export header, typed resources, id prefixes, a parentId chain, no dotted keys", () => {
			expect(workspace).toMatchObject({ _type: "export", __export_format: 4 });
			const byId = new Map<string, InsomniaResource>(workspace.resources.map((r) => [r._id, r]));
			expect(byId.size).toBe(workspace.resources.length);
			const prefixes: Record<string, string> = { workspace: "wrk_", environment: "env_", request_group: "fld_", request: "req_" };
			const workspaces = workspace.resources.filter((r) => r._type === "workspace");
			expect(workspaces).toHaveLength(1);
			expect(workspaces[0]!.parentId).toBeNull();
			for (const resource of workspace.resources) {
				expect(Object.keys(prefixes)).toContain(resource._type);
				expect(resource._id.startsWith(prefixes[resource._type]!)).toBe(true);
				expect(typeof resource.name).toBe("string");
				// Walk up to the workspace: every parent exists and is a folder or the workspace.
				let current = resource;
				for (let depth = 0; current._type !== "workspace"; depth++) {
					expect(depth).toBeLessThan(5);
					const parent = byId.get(current.parentId ?? "");
					expect(parent && ["workspace", "request_group"].includes(parent._type)).toBe(true);
					current = parent!;
				}
				if (resource._type === "environment") expect((resource.data as Record<string, string>).base_url).toMatch(/^http/);
				if (resource._type === "request") {
					expect(METHODS).toContain(String(resource.method).toLowerCase());
					expect(resource.url).toMatch(/^\{\{ _\.base_url \}\}\/api\//);
					const body = resource.body as { mimeType?: string; text?: string };
					if (body.text !== undefined) expect(() => JSON.parse(body.text!.split("{{ _.base_url }}").join("http://x"))).not.toThrow();
				}
			}
			// Insomnia refuses keys containing '.' (its database cannot store them).
			expect(() => JSON.stringify(workspace, (key, value) => (key.includes(".") ? (() => { throw new Error(key); })() : value))).not.toThrow();
		});

		it("has one request per documented route, in one folder per service", () => {
			const requests = workspace.resources.filter((r) => r._type === "request");
			const documented = Object.entries(doc.paths).flatMap(([, ops]) => Object.keys(ops).filter((m) => METHODS.includes(m)));
			expect(requests).toHaveLength(documented.length);
			const folders = workspace.resources.filter((r) => r._type === "request_group").map((r) => r.name);
			for (const name of services.filter((n) => n !== "gateway")) expect(folders).toContain(name);
		});

		it("carries the seed's example bodies where the seed has them", () => {
			if (!defaultSeedFile(ROOT)) return console.warn("SKIPPED seed examples: no seed beside this checkout");
			const create = workspace.resources.find((r) => r._type === "request" && r.method === "POST" && r.url === "{{ _.base_url }}/api/mainscripts");
			expect(create?.name).toBe("Create Mainscript");
			expect(JSON.parse((create!.body as { text: string }).text).text).toContain("chain {{ _.base_url }}/api/subscripts/1");
		});

		it("the committed insomnia/workspace.json is current (regenerate with `npm run insomnia`)", async () => {
			if (!defaultSeedFile(ROOT)) return console.warn("SKIPPED staleness check: the committed file was generated with the seed's examples");
			// As `npm run insomnia` makes it: auth on, so requests that need a token carry one.
			const generated = insomniaExport(await liveOpenApiDocument(), seedExamples(defaultSeedFile(ROOT)));
			const committed = fs.readFileSync(path.join(ROOT, "insomnia", WORKSPACE_FILE), "utf8");
			expect(committed).toBe(serializeWorkspace(generated));
			const request = (method: string, url: string) => generated.resources.find((r) => r.method === method && r.url === `{{ _.base_url }}${url}`);
			expect(request("POST", "/api/mainscripts")?.authentication).toEqual({ type: "bearer", token: "{{ _.api_token }}" });
			// The machine path (what booting hosts fetch) needs no token.
			expect(request("GET", "/api/mainscripts/1")?.authentication).toEqual({});
		}, 60_000);
	});

	describe("/api/metrics", () => {
		it("serves Prometheus text with request counts, action latency and builds by status", async () => {
			for (let i = 0; i < 3; i++) expect((await provisioner.api("/mainscripts", { method: "POST", json: { text: `#!ipxe\necho ${i}` } })).status).toBe(201);
			expect((await provisioner.api("/mainscripts/999999")).status).toBe(404);
			const response = await provisioner.api("/metrics");
			expect(response.status).toBe(200);
			expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
			const text = await response.text();
			expect(exposition(text)).toEqual([]);
			const families = parsePrometheusTextFormat(text);
			const family = (name: string) => families.find((f) => f.name === name);

			const requests = family("moleculer_request_total");
			expect(requests?.type).toBe("COUNTER");
			const creates = requests!.metrics.filter((m: any) => m.labels.action === "mainscripts.create");
			expect(creates.reduce((sum: number, m: any) => sum + Number(m.value), 0)).toBeGreaterThanOrEqual(3);
			expect(creates[0]!.labels!.nodeID).toBe(provisioner.broker.nodeID);

			// Action latency: a histogram family. (The parser keeps no labels for histograms, so its
			// samples are read from the lines: buckets, _sum and _count per action.)
			expect(family("moleculer_request_time")?.type).toBe("HISTOGRAM");
			const createLatency = text.split("\n").filter((line) => line.startsWith("moleculer_request_time") && line.includes('action="mainscripts.create"'));
			const sample = (suffix: string) => Number(createLatency.find((line) => line.startsWith(`moleculer_request_time${suffix}{`))?.split(" ").pop());
			expect(sample("_count")).toBeGreaterThanOrEqual(3);
			expect(sample("_sum")).toBeGreaterThan(0);
			expect(createLatency.filter((line) => line.startsWith("moleculer_request_time_bucket{")).length).toBeGreaterThan(3);
			expect(createLatency.find((line) => line.includes('le="+Inf"'))?.split(" ").pop()).toBe(String(sample("_count")));

			const errors = family("moleculer_request_error_total");
			expect(errors!.metrics.some((m: any) => m.labels.action === "mainscripts.get" && Number(m.value) >= 1)).toBe(true);

			const builders = services.filter((name) => CATALOGUE[name]!.queue);
			const builds = family("clusterplatform_builds");
			const queues = family("clusterplatform_queue_jobs");
			if (builders.length === 0) {
				// Registered only when builder services exist.
				expect(builds).toBeUndefined();
				expect(queues).toBeUndefined();
				return;
			}
			expect(builds?.type).toBe("GAUGE");
			for (const builder of builders.filter((b) => (builds?.metrics ?? []).some((m: any) => m.labels.builder === b) || false)) {
				expect(builds!.metrics.filter((m: any) => m.labels.builder === builder).map((m: any) => m.labels.status).sort()).toEqual(["done", "failed", "queued", "working"]);
			}
			expect(queues?.type).toBe("GAUGE");
			expect(queues!.metrics.some((m: any) => m.labels.state === "waiting")).toBe(true);
		});

		it("counts builds by status and queue depth from a builder with a queued build", async () => {
			// A build nobody works on (no worker runs here) stays queued: both gauges must say so.
			const examples = seedExamples(defaultSeedFile(ROOT)).filter((e) => e.method === "POST");
			const builder = services.find((name) => CATALOGUE[name]!.queue && examples.some((e) => e.path === `/api/${name}`));
			if (!builder) return console.warn("SKIPPED: no builder service with a seed example in this build");
			const example = examples.find((e) => e.path === `/api/${builder}`)!;
			const created = await provisioner.api(`/${builder}`, { method: "POST", json: example.body });
			expect(created.status).toBe(201);
			const rows = Number(await provisioner.broker.call(`${builder}.count`, { query: { status: "queued" } }));
			expect(rows).toBeGreaterThanOrEqual(1);
			const families = parsePrometheusTextFormat(await (await provisioner.api("/metrics")).text());
			const value = (family: string, labels: Record<string, string>) =>
				Number((families.find((f) => f.name === family)!.metrics.find((m: any) => Object.entries(labels).every(([k, v]) => m.labels[k] === v)) as any)?.value);
			expect(value("clusterplatform_builds", { builder, status: "queued" })).toBe(rows);
			expect(value("clusterplatform_queue_jobs", { queue: builder, state: "waiting" })).toBeGreaterThanOrEqual(1);
		});
	});
});

describe("renderPrometheus", () => {
	it("gives rates a gauge family of their own and renders histograms as buckets, _sum and _count only", () => {
		const text = renderPrometheus(
			mergeNodeMetrics([
				{
					nodeID: "a",
					metrics: [
						{ name: "moleculer.request.total", type: "counter", description: "Requests", values: [{ labels: { action: "x.get" }, value: 4, rate: 0.5 }] },
						{ name: "moleculer.request.time", type: "histogram", unit: "millisecond", values: [{ labels: { action: "x.get" }, buckets: { 10: 3, 100: 4 }, count: 4, sum: 55, quantiles: { 0.5: 9 }, min: 1, mean: 13 }] },
					],
				},
				{ nodeID: "b", metrics: [{ name: "moleculer.request.total", type: "counter", description: "Requests", values: [{ labels: { action: "x.get" }, value: 2 }] }] },
			]),
		);
		expect(exposition(text)).toEqual([]);
		expect(text).toContain('moleculer_request_total{action="x.get",nodeID="a"} 4');
		expect(text).toContain('moleculer_request_total{action="x.get",nodeID="b"} 2');
		expect(text).toContain("# TYPE moleculer_request_total_rate gauge");
		expect(text).toContain('moleculer_request_total_rate{action="x.get",nodeID="a"} 0.5');
		expect(text).toContain('moleculer_request_time_bucket{action="x.get",nodeID="a",le="+Inf"} 4');
		expect(text).toContain('moleculer_request_time_sum{action="x.get",nodeID="a"} 55');
		expect(text).not.toMatch(/quantile=|_mean|_min/);
		// The strict check catches what Moleculer's own reporter emits (negative control).
		expect(exposition("# TYPE m counter\nm 1\nm_rate 0.5\n")).toEqual(["m_rate inside family m (counter)"]);
	});
});

describe("buildOpenApiDocument (negative controls of the generator)", () => {
	it("maps rule shapes: enum, shorthand, optional, array, nested object", () => {
		const doc = buildOpenApiDocument(
			[
				{
					method: "POST",
					path: "/api/things",
					action: "things.create",
					params: {
						kind: { type: "enum", values: ["a", "b"] },
						note: "string|optional|max:10",
						tags: { type: "array", items: "string" },
						box: { type: "object", props: { size: { type: "number", integer: true, min: 1 } } },
						$$strict: true,
					},
				},
			],
			{ version: "1.0.0", serverUrl: "http://x" },
		);
		const schema = (doc.paths["/api/things"]!.post as any).requestBody.content["application/json"].schema;
		expect(schema.required).toEqual(["kind", "tags", "box"]);
		expect(schema.properties.kind).toEqual({ enum: ["a", "b"] });
		expect(schema.properties.note).toEqual({ type: "string", maxLength: 10 });
		expect(schema.properties.tags).toEqual({ type: "array", items: { type: "string" } });
		expect(schema.properties.box.properties.size).toEqual({ type: "integer", minimum: 1 });
	});
});
