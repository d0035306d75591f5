import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Context, ServiceBroker } from "moleculer";
import {
	DataTypes,
	ID_PARAM,
	SITE_WORKER_FIELDS,
	SiteWorkerState,
	createBroker,
	defineService,
	entityMixin,
	loadConfig,
	routedToSite,
	siteWorkerMixin,
	siteWorkersMixin,
	stateColumns,
	type DnsmasqStatus,
	type EntityMethods,
	type SiteWorkerColumns,
	type SiteWorkerEnvironment,
	type SiteWorkerVars,
	type SiteWorkersMethods,
} from "@clusterplatform/core";
import { eventually, freePort } from "@clusterplatform/test-kit/ports";
import { describeIf, missingProgram } from "@clusterplatform/test-kit/requirements";

/**
 * Both halves of a site service on in-process brokers joined by Moleculer's in-process transporter:
 * a manager (rows, routed commands) and one worker per site, each supervising a real dnsmasq
 * (DNS only, on 127.0.0.1). A mistake in either mixin fails here in seconds, not after a QEMU boot.
 */

const SITE_A = "a.sites.example";
const SITE_B = "b.sites.example";
/** The bus admits only the site services' names from a site's node (bus.ts: confineSiteNodes), so the probe takes the DNS worker's. */
const WORKER = "dns-worker";
const STATE_EVENT = "probe.state";

interface ProbeStatus extends DnsmasqStatus {
	artifactId: string;
	port: number | null;
}

/** A site service of the smallest kind: a DNS-only dnsmasq on loopback, and a trace of the commands it ran. */
class ProbeSite extends SiteWorkerState<{ port: number | null; on: boolean }, ProbeStatus> {
	readonly trace: string[] = [];
	private readonly confFile = this.file("dnsmasq.conf");

	constructor(env: SiteWorkerEnvironment) {
		super(env, { port: null, on: false }, { readyLine: /started, version/ });
	}

	status(): ProbeStatus {
		return { ...this.dnsmasq.status(), artifactId: this.artifactId, port: this.saved.port };
	}

	async configure(port: number): Promise<ProbeStatus> {
		const lines = [`port=${port}`, "listen-address=127.0.0.1", "bind-interfaces", "no-resolv", "no-hosts", "pid-file=", ...(process.getuid?.() === 0 ? ["user=root"] : [])];
		await fsp.writeFile(this.confFile, `${lines.join("\n")}\n`);
		this.saved.port = port;
		await this.save();
		return this.status();
	}

	async setOn(on: boolean): Promise<ProbeStatus> {
		this.saved.on = on;
		await this.save();
		if (on) await this.dnsmasq.restart(this.confFile);
		else await this.dnsmasq.stop();
		return this.status();
	}

	async resume(): Promise<void> {
		if (this.saved.on && this.saved.port) await this.dnsmasq.start(this.confFile);
	}

	/** A command that takes `ms`, recording when it starts and ends. */
	async step(label: string, ms: number, fail: boolean): Promise<string[]> {
		this.trace.push(`start ${label}`);
		await new Promise((resolve) => setTimeout(resolve, ms));
		this.trace.push(`end ${label}`);
		if (fail) throw new Error(`step ${label} failed`);
		return [...this.trace];
	}
}

const ProbeWorkerService = defineService<object, SiteWorkerVars<ProbeSite>>({
	name: WORKER,
	mixins: [siteWorkerMixin({ stateEvent: STATE_EVENT, dirName: "probe", create: (env) => new ProbeSite(env) })],
	actions: {
		configure: {
			params: { port: "number" },
			handler(ctx: Context<{ port: number }>) {
				return this.site.serially(() => this.site.configure(ctx.params.port));
			},
		},
		step: {
			params: { label: "string", ms: "number", fail: { type: "boolean", default: false } },
			handler(ctx: Context<{ label: string; ms: number; fail: boolean }>) {
				return this.site.serially(() => this.site.step(ctx.params.label, ctx.params.ms, ctx.params.fail));
			},
		},
		/** Who carried out a routed call. */
		whoAmI: {
			params: { word: "string" },
			handler(ctx: Context<{ word: string }>) {
				return { word: ctx.params.word, nodeID: this.broker.nodeID, artifactId: this.site.artifactId, params: Object.keys(ctx.params) };
			},
		},
	},
});

type ProbeColumns = SiteWorkerColumns & { port: number | null };

const ProbesService = defineService<SiteWorkersMethods<ProbeColumns> & EntityMethods<ProbeColumns>>({
	name: "probes",
	mixins: [
		siteWorkersMixin<ProbeStatus, ProbeColumns>({ workerService: WORKER, keyColumn: "artifactId", stateEvent: STATE_EVENT, noun: "probe", statusColumns: (status) => ({ ...stateColumns(status), port: status.port }) }),
		entityMixin({
			name: "probes",
			fields: { artifactId: { type: DataTypes.STRING(253), allowNull: false, unique: true }, ...SITE_WORKER_FIELDS, port: { type: DataTypes.INTEGER, allowNull: true } },
			params: {},
		}),
	],
	actions: {
		configure: {
			params: { id: ID_PARAM, port: "number", artifactId: { type: "any", optional: true } },
			async handler(ctx: Context<{ id: number; port: number; artifactId?: unknown }>) {
				const { row, answer } = await this.commandRow<ProbeStatus>(ctx, ctx.params, "configure", { port: ctx.params.port }, { timeout: 10_000 });
				return this.record(ctx, row.id, { port: answer.port, ...stateColumns(answer) });
			},
		},
		setStatus: {
			params: { id: ID_PARAM, on: "boolean" },
			async handler(ctx: Context<{ id: number; on: boolean }>) {
				const { row, answer } = await this.commandRow<ProbeStatus>(ctx, ctx.params, "setStatus", { on: ctx.params.on }, { timeout: 20_000 });
				return this.record(ctx, row.id, stateColumns(answer));
			},
		},
		whoAmI: routedToSite("whoAmI", { word: "string" }, { timeout: 5000 }),
	},
});

interface Site {
	artifactId: string;
	dataDir: string;
	broker: ServiceBroker;
}

describeIf(missingProgram(["dnsmasq"]), "site-worker halves on in-process brokers", () => {
	const namespace = `site-workers-${process.pid}`;
	const dirs: string[] = [];
	let manager: ServiceBroker;
	const sites: Record<string, Site> = {};

	const tempDir = (name: string) => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cpp-site-workers-${name}-`));
		dirs.push(dir);
		return dir;
	};
	async function startSite(artifactId: string, dataDir = tempDir(artifactId)): Promise<Site> {
		const config = loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: "fatal", CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: artifactId, NODE_ID: `probe-${Date.now()}` });
		const broker = createBroker(config, { logger: false, transporter: "Fake", namespace });
		broker.createService(ProbeWorkerService);
		await broker.start();
		sites[artifactId] = { artifactId, dataDir, broker };
		return sites[artifactId];
	}
	const call = <T = unknown>(action: string, params: object = {}) => manager.call<T, object>(`probes.${action}`, params, { meta: { $responseJSON: true } });
	const rowOf = async (artifactId: string) => {
		const page = await call<{ rows: (ProbeColumns & { id: number })[] }>("list", { pageSize: 10 });
		return page.rows.find((r) => r.artifactId === artifactId);
	};
	const online = (artifactId: string) => eventually(async () => {
		const row = await rowOf(artifactId);
		return row?.online && row.nodeID === sites[artifactId]!.broker.nodeID ? row : undefined;
	}, 15_000, `the worker of ${artifactId} online`);

	beforeAll(async () => {
		manager = createBroker(loadConfig({ DATA_DIR: tempDir("manager"), LOG_LEVEL: "fatal", NODE_ID: "manager" }), { logger: false, transporter: "Fake", namespace });
		manager.createService(ProbesService);
		await manager.start();
		await startSite(SITE_A);
		await startSite(SITE_B);
	});
	afterAll(async () => {
		for (const site of Object.values(sites)) await site.broker.stop();
		await manager?.stop();
		for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	it("keeps a row per site, on the node whose ID names that site, with the status it read", async () => {
		for (const artifactId of [SITE_A, SITE_B]) {
			const row = await online(artifactId);
			expect(row.nodeID).toMatch(new RegExp(`^site\\.${artifactId.split(".")[0]}~`));
			expect(row).toMatchObject({ on: false, state: "off", port: null });
		}
	});

	it("carries a routed call out on the node that holds the site, and only the other params reach it", async () => {
		await online(SITE_A);
		await online(SITE_B);
		for (const artifactId of [SITE_A, SITE_B]) {
			const answer = await call("whoAmI", { artifactId, word: "hello" });
			expect(answer).toEqual({ word: "hello", nodeID: sites[artifactId]!.broker.nodeID, artifactId, params: ["word"] });
		}
		await expect(call("whoAmI", { artifactId: "nobody.example", word: "x" })).rejects.toMatchObject({ code: 503, message: 'no probe for site "nobody.example" is online' });
	});

	it("sends a row's command to that row's node, and refuses a row named with another site's tag", async () => {
		const b = await online(SITE_B);
		const port = await freePort();
		expect(await call("configure", { id: b.id, port })).toMatchObject({ artifactId: SITE_B, port });
		expect(fs.readFileSync(path.join(sites[SITE_B]!.dataDir, "probe", "dnsmasq.conf"), "utf8")).toContain(`port=${port}`);
		expect(fs.existsSync(path.join(sites[SITE_A]!.dataDir, "probe", "dnsmasq.conf"))).toBe(false);
		await expect(call("configure", { id: b.id, port, artifactId: SITE_A })).rejects.toMatchObject({ code: 422, data: [expect.objectContaining({ field: "artifactId" })] });
	});

	it("follows the worker's dnsmasq through its state events: on, crashed with the reason, off", async () => {
		const a = await online(SITE_A);
		await call("configure", { id: a.id, port: await freePort() });
		const on = await call<ProbeColumns>("setStatus", { id: a.id, on: true });
		expect(on).toMatchObject({ on: true, state: "on", stateReason: null });
		const { pid } = await manager.call<ProbeStatus, object>(`${WORKER}.status`, {}, { nodeID: a.nodeID });
		expect(pid).toEqual(expect.any(Number));
		process.kill(pid!, "SIGKILL");
		// Nobody asked: only the worker's event can tell the manager.
		const crashed = await eventually(async () => {
			const row = await rowOf(SITE_A);
			return row?.state === "crashed" ? row : undefined;
		}, 15_000, "the crash recorded");
		expect(crashed).toMatchObject({ on: false, stateReason: expect.stringContaining("dnsmasq exited on SIGKILL") });
		expect(await call("setStatus", { id: a.id, on: false })).toMatchObject({ on: false, state: "off", stateReason: null });
	});

	it("runs a worker's commands one at a time in the order they came, past a failed one", async () => {
		const nodeID = sites[SITE_A]!.broker.nodeID;
		const step = (label: string, ms: number, fail = false) => manager.call<string[], object>(`${WORKER}.step`, { label, ms, fail }, { nodeID });
		const results = await Promise.allSettled([step("1", 150), step("2", 0, true), step("3", 0)]);
		expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
		expect((results[2] as PromiseFulfilledResult<string[]>).value).toEqual(["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]);
	});

	it("shows a stopped worker offline and answers 503 for it; restarted, it serves again what it served, on the same row", async () => {
		const b = await online(SITE_B);
		await call("setStatus", { id: b.id, on: true });
		await sites[SITE_B]!.broker.stop();
		await eventually(async () => (await rowOf(SITE_B))?.online === false || undefined, 15_000, "the row offline");
		await expect(call("setStatus", { id: b.id, on: true })).rejects.toMatchObject({ code: 503, message: expect.stringContaining(`probe ${b.id} (${SITE_B}) is offline, last seen`) });
		await expect(call("whoAmI", { artifactId: SITE_B, word: "x" })).rejects.toMatchObject({ code: 503 });
		await startSite(SITE_B, sites[SITE_B]!.dataDir);
		const back = await online(SITE_B);
		expect(back).toMatchObject({ id: b.id, on: true, state: "on" });
		expect(back.nodeID).not.toBe(b.nodeID);
	});
});
