import net from "node:net";
import { PassThrough, type Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import type { Context, ServiceSchema } from "moleculer";
import { ARTIFACT_ID_PARAM, BOOLEAN_PARAM, DataTypes, ID_PARAM, UnavailableError, entityMixin, invalid, respondCreated, textParam, type RequestMeta } from "@clusterplatform/core";
import { WORKER_SERVICE, type ScriptRecord, type ScriptResult } from "@clusterplatform/distributor";

const IP_PARAM = {
	type: "string",
	trim: true,
	custom: (value: string, errors: { type: string; actual: unknown }[]) => {
		if (net.isIP(value) === 0) errors.push({ type: "stringPattern", actual: value });
		return value;
	},
	messages: { stringPattern: "The 'ip' field must be an IPv4 or IPv6 address." },
};

/** How often every node's reachability is checked from its site's distributor. */
const REACHABILITY_INTERVAL_MS = 30_000;
/** A node counts as reachable when its SSH port answers within this. */
const REACH_TIMEOUT_MS = 1500;
const SCRIPT_TIMEOUT_DEFAULT_S = 300;
/** Clients that ask for this get the script's output while it runs (NDJSON), not when it ends. */
const STREAM_ACCEPT = /application\/x-ndjson/i;
/** Output a streamed run holds for a client that does not read it (the end record always goes). */
const RELAY_LIMIT = 8 * 1024 * 1024;

interface ScriptRequest {
	id: number;
	script: string;
	privateKey?: string;
	sshkeyId?: number;
	timeout: number;
}

interface Registration {
	ip: string;
	artifactId: string;
	pingable?: boolean;
	sshPort?: number;
}

/** The port the node's SSH server listens on (22 unless it registered another). */
const SSH_PORT_PARAM = { type: "number", integer: true, min: 1, max: 65535, convert: true, optional: true } as const;

/**
 * /api/localnodes: installed hosts register here from their post-boot script
 * (POST /api/localnodes?ip=…&artifactId=…&pingable=true[&sshPort=2222]). Registering again updates the row.
 * `reachable` is checked in the background from the site's distributor (its SSH port answers);
 * PUT /:id/script runs a script as root on the node over SSH from that distributor.
 */
export const LocalnodesService: ServiceSchema = {
	name: "localnodes",
	mixins: [
		entityMixin({
			name: "localnodes",
			fields: {
				ip: { type: DataTypes.STRING(45), allowNull: false, unique: "localnode_site_ip" },
				artifactId: { type: DataTypes.STRING(253), allowNull: false, unique: "localnode_site_ip" },
				pingable: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
				/** null until a distributor of the site has checked. */
				reachable: { type: DataTypes.BOOLEAN, allowNull: true },
				reachableCheckedAt: { type: DataTypes.DATE, allowNull: true },
				/** SSH host key fingerprint seen on first use; later connections must present it. */
				hostKey: { type: DataTypes.STRING(128), allowNull: true },
				sshPort: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 22 },
			},
			params: { ip: IP_PARAM, artifactId: ARTIFACT_ID_PARAM, pingable: { ...BOOLEAN_PARAM, optional: true }, sshPort: SSH_PORT_PARAM },
		}),
	],
	settings: { reachabilityIntervalMs: REACHABILITY_INTERVAL_MS },
	actions: {
		create: {
			hooks: {
				after(this: any, _ctx: Context, row: unknown) {
					// A node that just registered is checked at once, without holding up its request.
					void this.refreshReachability();
					return row;
				},
			},
			async handler(this: any, ctx: Context<Registration, RequestMeta>) {
				const { ip, artifactId, pingable, sshPort } = ctx.params;
				const changes = { ...(pingable === undefined ? {} : { pingable }), ...(sshPort === undefined ? {} : { sshPort }) };
				const existing = await this.adapter.findOne({ where: { ip, artifactId } });
				if (existing) {
					const row = await this.adapter.updateById(existing.id, { $set: changes });
					const json = await this.transformDocuments(ctx, {}, row);
					await this.entityChanged("updated", json, ctx);
					return json;
				}
				try {
					const row = await this._create(ctx, { ip, artifactId, ...changes });
					return respondCreated(ctx, row, `/api/localnodes/${row.id}`);
				} catch (err) {
					// Two registrations raced; the unique index kept one row: update it instead.
					if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
					const row = await this.adapter.findOne({ where: { ip, artifactId } });
					return this.transformDocuments(ctx, {}, await this.adapter.updateById(row.id, { $set: changes }));
				}
			},
		},
		script: {
			rest: "PUT /:id/script",
			description: "Run a script as root on the node over SSH from its site's distributor: {code, signal, stdout, stderr} when it has ended, or with Accept: application/x-ndjson one JSON record per line while it runs ({stdout}, {stderr}, then {code, signal} or {error, status})",
			params: {
				id: ID_PARAM,
				script: textParam(1024 * 1024),
				privateKey: textParam(64 * 1024, { optional: true }),
				sshkeyId: { ...ID_PARAM, optional: true },
				/** Seconds the script may run. */
				timeout: { type: "number", integer: true, min: 1, max: 3600, convert: true, default: SCRIPT_TIMEOUT_DEFAULT_S },
				$$strict: true,
			},
			async handler(this: any, ctx: Context<ScriptRequest, RequestMeta>): Promise<Pick<ScriptResult, "code" | "signal" | "stdout" | "stderr"> | Readable> {
				const node = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				const privateKey = await this.privateKeyFor(ctx, node.artifactId);
				const nodeID = await this.distributorOf(ctx, node.artifactId);
				const timeoutMs = ctx.params.timeout * 1000;
				const audit = await this.beginAudit(ctx, node);
				if (STREAM_ACCEPT.test(ctx.meta.accept ?? "")) return this.streamScript(ctx, node, { privateKey, nodeID, timeoutMs, auditId: audit.id });
				let result: ScriptResult;
				try {
					result = await ctx.call(
						`${WORKER_SERVICE}.runScript`,
						{ ip: node.ip, port: node.sshPort, script: ctx.params.script, privateKey, expectedHostKey: node.hostKey, timeoutMs },
						{ nodeID, timeout: timeoutMs + 15_000 },
					);
				} catch (err) {
					await ctx.call("scriptruns.finish", { id: audit.id, code: null, error: (err as Error).message });
					throw err;
				}
				await ctx.call("scriptruns.finish", { id: audit.id, code: result.code, signal: result.signal ?? null });
				if (!node.hostKey) await this.adapter.updateById(node.id, { $set: { hostKey: result.hostKey, reachable: true, reachableCheckedAt: new Date() } });
				return { code: result.code, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
			},
		},
	},
	methods: {
		/**
		 * The script's output as NDJSON records while it runs (see ScriptRecord), for clients that
		 * send Accept: application/x-ndjson. The run is audited as the buffered one: begun before,
		 * finished with the last record's exit status (or the error that ended the stream).
		 */
		async streamScript(this: any, ctx: Context<ScriptRequest, RequestMeta>, node: { id: number; ip: string; sshPort: number; hostKey: string | null }, run: { privateKey: string; nodeID: string; timeoutMs: number; auditId: number }): Promise<Readable> {
			let upstream: Readable;
			try {
				upstream = await ctx.call(
					`${WORKER_SERVICE}.streamScript`,
					{ ip: node.ip, port: node.sshPort, script: ctx.params.script, privateKey: run.privateKey, expectedHostKey: node.hostKey, timeoutMs: run.timeoutMs },
					{ nodeID: run.nodeID, timeout: run.timeoutMs + 15_000 },
				);
			} catch (err) {
				await ctx.call("scriptruns.finish", { id: run.auditId, code: null, error: (err as Error).message });
				throw err;
			}
			// The worker's records are read as they come whatever the client does, so the run is always
			// audited when it ends; a client too slow (or gone) loses output beyond RELAY_LIMIT, never the end.
			const relay = new PassThrough();
			let ended: ScriptRecord | null = null;
			let pending = "";
			const decoder = new StringDecoder("utf8");
			const forward = (record: ScriptRecord) => {
				if (relay.destroyed) return;
				if ("code" in record || "error" in record || relay.writableLength < RELAY_LIMIT) relay.write(`${JSON.stringify(record)}\n`);
			};
			upstream.on("data", (chunk: Buffer) => {
				pending += decoder.write(chunk);
				const lines = pending.split("\n");
				pending = lines.pop() ?? "";
				for (const line of lines.filter(Boolean)) {
					let record: ScriptRecord;
					try {
						record = JSON.parse(line) as ScriptRecord;
					} catch {
						upstream.destroy(new Error(`the distributor sent a record that is not JSON: ${line.slice(0, 80)}`));
						return;
					}
					if ("code" in record || "error" in record) ended = record;
					// The host key is the provisioner's business (trust on first use), not the client's.
					forward("code" in record ? { code: record.code, signal: record.signal } : record);
				}
			});
			let settled = false;
			const settle = async (failure?: Error) => {
				if (settled) return;
				settled = true;
				const outcome: ScriptRecord = ended ?? { error: failure?.message ?? "the script's output ended without an exit status", name: "SshFailedError", status: 502 };
				if (!ended) forward(outcome);
				try {
					if ("error" in outcome) await ctx.call("scriptruns.finish", { id: run.auditId, code: null, error: outcome.error });
					else if ("code" in outcome) {
						await ctx.call("scriptruns.finish", { id: run.auditId, code: outcome.code, signal: outcome.signal ?? null });
						if (!node.hostKey && outcome.hostKey) await this.adapter.updateById(node.id, { $set: { hostKey: outcome.hostKey, reachable: true, reachableCheckedAt: new Date() } });
					}
				} catch (err) {
					this.logger.error(`localnode ${node.id}: could not record the end of script run ${run.auditId}: ${(err as Error).message}`);
				}
				if (!relay.destroyed) relay.end();
			};
			upstream.once("end", () => void settle());
			// Moleculer may emit more than one error on a response stream: every one must have a listener.
			upstream.on("error", (err) => void settle(err));
			ctx.meta.$responseType = "application/x-ndjson; charset=utf-8";
			return relay;
		},
		/** Log the run before it starts: a run that cannot be audited does not happen. */
		async beginAudit(this: any, ctx: Context<ScriptRequest>, node: { id: number; ip: string; artifactId: string }): Promise<{ id: number }> {
			try {
				return await ctx.call("scriptruns.begin", { localnodeId: node.id, ip: node.ip, artifactId: node.artifactId, script: ctx.params.script });
			} catch (err) {
				if ((err as Error).name === "ServiceNotFoundError") throw new UnavailableError("the audit log (scriptruns service) is not running: scripts are not run unaudited");
				throw err;
			}
		},
		/** The key named in the request, or else the newest private key stored for the node's site. */
		async privateKeyFor(this: any, ctx: Context<ScriptRequest>, artifactId: string): Promise<string> {
			if (ctx.params.privateKey) return ctx.params.privateKey;
			const byId = ctx.params.sshkeyId !== undefined;
			const query = byId ? { id: ctx.params.sshkeyId } : { artifactId };
			try {
				// sshkeys keeps private keys sealed at rest and opens them only for services.
				const key = await ctx.call<{ text: string }, typeof query>("sshkeys.privateKey", query);
				return key.text;
			} catch (err) {
				if ((err as Error).name !== "NotFoundError" && (err as Error).name !== "ServiceNotFoundError") throw err;
				if (byId) invalid("sshkeyId", `no private sshkey ${ctx.params.sshkeyId}`);
				invalid("privateKey", `is required: send privateKey or sshkeyId, or store a private key for site "${artifactId}" in /api/sshkeys`);
			}
		},
		/** The node of an online distributor of the site; 503 when there is none. */
		async distributorOf(this: any, ctx: Context, artifactId: string): Promise<string> {
			try {
				const { nodeID } = await ctx.call<{ nodeID: string }, { artifactId: string }>("distributors.siteNode", { artifactId });
				return nodeID;
			} catch (err) {
				if ((err as Error).name === "ServiceNotFoundError") throw new UnavailableError(`no distributor for site "${artifactId}" is online (the distributors service is not running)`, { artifactId });
				throw err;
			}
		},
		/** Check every node from its site's distributor; one run at a time, never on a request's path. */
		async refreshReachability(this: any): Promise<void> {
			if (this.reachabilityRun) return this.reachabilityRun;
			this.reachabilityRun = this.checkAllSites()
				.catch((err: Error) => this.logger.warn(`reachability check failed: ${err.message}`))
				.finally(() => {
					this.reachabilityRun = null;
				});
			return this.reachabilityRun;
		},
		async checkAllSites(this: any): Promise<void> {
			// Without a distributors manager in the cluster there is nobody to check from.
			if (!this.adapter?.model || !this.broker.registry.getActionEndpoints("distributors.siteNode")?.hasAvailable()) return;
			const rows = (await this.adapter.find({ query: {} })).map((r: any) => r.get({ plain: true }));
			const sites = new Map<string, { id: number; ip: string; sshPort: number }[]>();
			for (const row of rows) sites.set(row.artifactId, [...(sites.get(row.artifactId) ?? []), row]);
			for (const [artifactId, nodes] of sites) {
				const site = await this.broker.call("distributors.siteNode", { artifactId }).catch(() => null);
				if (!site) continue;
				for (const port of new Set(nodes.map((n) => n.sshPort))) {
					const onPort = nodes.filter((n) => n.sshPort === port);
					const ips = [...new Set(onPort.map((n) => n.ip))];
					const reached: Record<string, boolean> = await this.broker.call(`${WORKER_SERVICE}.reach`, { ips, port, timeoutMs: REACH_TIMEOUT_MS }, { nodeID: site.nodeID, timeout: REACH_TIMEOUT_MS + 10_000 });
					const now = new Date();
					for (const node of onPort) await this.adapter.updateById(node.id, { $set: { reachable: reached[node.ip] ?? null, reachableCheckedAt: now } });
				}
			}
		},
	},
	started(this: any) {
		this.reachabilityTimer = setInterval(() => void this.refreshReachability(), this.settings.reachabilityIntervalMs);
	},
	async stopped(this: any) {
		clearInterval(this.reachabilityTimer);
		await this.reachabilityRun;
	},
};

export { ScriptRunsService } from "./scriptruns";

export default LocalnodesService;
