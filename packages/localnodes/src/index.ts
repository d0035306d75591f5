import net from "node:net";
import { PassThrough, type Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { Errors } from "moleculer";
import {
	ARTIFACT_ID_PARAM,
	BOOLEAN_PARAM,
	ConflictError,
	DataTypes,
	ID_PARAM,
	Op,
	RateLimiter,
	UnavailableError,
	configOf,
	defineService,
	rateKeyOf,
	entityMixin,
	invalid,
	mayActForSite,
	respondCreated,
	textParam,
	type Caller,
	type EntityJson,
	type EntityMethods,
	type EntityVars,
	type RequestMeta,
} from "@clusterplatform/core";
import { HOST_KEY_FINGERPRINT, WORKER_SERVICE, checkPrivateKey, fingerprint, type ScriptRecord, type ScriptResult } from "@clusterplatform/distributor";
import type { EnrolmentCheck } from "./enrolments";
import { Reachability } from "./reachability";

/** Addresses no node has: a registration naming one would point scripts at nobody, or everybody. */
const NO_NODE = new net.BlockList();
NO_NODE.addAddress("0.0.0.0");
NO_NODE.addAddress("255.255.255.255");
NO_NODE.addSubnet("224.0.0.0", 4);
NO_NODE.addAddress("::", "ipv6");
NO_NODE.addSubnet("ff00::", 8, "ipv6");
const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8);
LOOPBACK.addAddress("::1", "ipv6");

/** The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), else the address itself. */
function unmapped(ip: string): string {
	return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1] ?? ip;
}

/**
 * One spelling per address (IPv4 for IPv4-mapped, compressed lower-case IPv6, the zone kept), so
 * ::ffff:10.0.0.5 or FE80:0::AB cannot register as a second row of a known node.
 */
export function canonicalIp(ip: string): string {
	const [address, zone] = unmapped(ip.trim()).split("%") as [string, string | undefined];
	if (!net.isIPv6(address)) return address;
	return `${new URL(`http://[${address}]`).hostname.slice(1, -1)}${zone ? `%${zone}` : ""}`;
}

function familyOf(ip: string): "ipv4" | "ipv6" {
	return net.isIPv4(ip) ? "ipv4" : "ipv6";
}

const IP_PARAM = {
	type: "string",
	trim: true,
	custom: (value: unknown, errors: { type: string; actual: unknown; message?: string }[]) => {
		if (typeof value !== "string") return value;
		const ip = unmapped(value);
		if (net.isIP(ip) === 0) errors.push({ type: "nodeAddress", actual: value, message: "The 'ip' field must be an IPv4 or IPv6 address." });
		else if (NO_NODE.check(ip, familyOf(ip))) errors.push({ type: "nodeAddress", actual: value, message: "The 'ip' field must be a node's own address, not an unspecified, multicast or broadcast one." });
		return value;
	},
};

const HOST_KEY_PARAM = { type: "string", optional: true, max: 16 * 1024 };
/** OpenSSH public key line (e.g. the node's /etc/ssh/ssh_host_ed25519_key.pub): type, base64 blob, comment. */
const PUBLIC_KEY_LINE = /^(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) ([A-Za-z0-9+/]+={0,3})(?: .*)?$/;

/** A host key as the node's fingerprint (SHA256:…), from a fingerprint or an OpenSSH public key line. */
export function hostKeyFingerprint(field: string, value: string): string {
	const text = value.trim();
	if (HOST_KEY_FINGERPRINT.test(text)) return text;
	const line = PUBLIC_KEY_LINE.exec(text);
	if (line) return fingerprint(Buffer.from(line[2]!, "base64"));
	return invalid(field, "must be an SSH host key fingerprint (SHA256:… as `ssh-keygen -lf` prints it) or a public key line (ssh-ed25519 AAAA…)");
}

/** How often each site's reachability pass runs (from its distributor), and how old a check may get before it is due again. */
const REACHABILITY_INTERVAL_MS = 30_000;
/** Registrations within this window after the first are checked together, in one pass. */
const REACHABILITY_COALESCE_MS = 1000;
/** Batches (of REACH_BATCH nodes) one site gets in one pass: a pass's work is bounded whatever the fleet's size. */
const REACH_BATCHES_PER_PASS = 4;
/** Sites of online distributors one scheduled pass goes through; the next pass goes on with the next ones. */
const SITES_PER_PASS = 1024;
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
	/** The host key the operator expects, accepted with this run when none is recorded yet. */
	hostKey?: string;
	timeout: number;
}

interface Registration {
	ip: string;
	artifactId: string;
	pingable?: boolean;
	sshPort?: number;
	/** The node's SSH host key; pinned only from an enrolled (or operator's) registration. */
	hostKey?: string;
	enrolmentToken?: string;
}

type LocalnodeMeta = RequestMeta & { caller?: Caller | null; remoteAddress?: string };

/** A localnodes row's own columns. */
interface LocalnodeColumns {
	ip: string;
	artifactId: string;
	pingable: boolean;
	/** null until a distributor of the site has checked. */
	reachable: boolean | null;
	reachableCheckedAt: Date | null;
	hostKey: string | null;
	sshPort: number;
}

type NodeRow = Pick<LocalnodeColumns, "ip" | "artifactId" | "pingable" | "sshPort" | "hostKey"> & { id: number };

/** What a reachability pass reads of a node. */
type ReachTarget = Pick<NodeRow, "id" | "ip" | "sshPort">;

type PassKind = "due" | "schedule";

type ScriptOutcome = Pick<ScriptResult, "code" | "signal" | "stdout" | "stderr">;

interface LocalnodesSettings extends ServiceSettingSchema {
	reachabilityIntervalMs: number;
	reachabilityCoalesceMs: number;
	reachBatchesPerPass: number;
	sitesPerPass: number;
}

interface LocalnodesMethods extends EntityMethods<LocalnodeColumns> {
	refuseLoopback(ip: string): void;
	registrationStanding(ctx: Context<Registration, LocalnodeMeta>): Promise<boolean>;
	limitRegistrations(ctx: Context<Registration, LocalnodeMeta>): void;
	registerAgain(ctx: Context<Registration, LocalnodeMeta>, row: NodeRow, enrolled: boolean): Promise<object>;
	registrationReply(ctx: Context<Registration, LocalnodeMeta>, row: EntityJson<LocalnodeColumns>): object;
	presentedHostKey(ctx: Context, node: NodeRow, nodeID?: string): Promise<string>;
	hostKeyToAccept(ctx: Context<ScriptRequest>, node: NodeRow, nodeID: string): Promise<string>;
	streamScript(ctx: Context<ScriptRequest, RequestMeta>, node: NodeRow & { hostKey: string }, run: { privateKey: string; nodeID: string; timeoutMs: number; auditId: number }): Promise<Readable>;
	beginAudit(ctx: Context<ScriptRequest>, node: { id: number; ip: string; artifactId: string }): Promise<{ id: number }>;
	privateKeyFor(ctx: Context<ScriptRequest>, artifactId: string): Promise<string>;
	distributorOf(ctx: Context, artifactId: string): Promise<string>;
	reachabilityDue(artifactId: string, id?: number): void;
	scheduleReachability(): void;
	refreshReachability(kind?: PassKind): Promise<void>;
	reachabilityPass(kind: PassKind): Promise<void>;
	onlineSites(): Promise<string[]>;
	checkSite(artifactId: string, nodeID: string, ids: Set<number>, stale: boolean): Promise<boolean>;
}

interface LocalnodesVars extends EntityVars<LocalnodeColumns> {
	reachability: Reachability;
	reachabilityTimer?: NodeJS.Timeout;
	/** Registrations per source, made at the first one. */
	registrations?: RateLimiter;
}

/** The most nodes one reachability call asks a distributor about (its `reach` action's bound). */
const REACH_BATCH = 1024;

/** The port the node's SSH server listens on (22 unless it registered another). */
const SSH_PORT_PARAM = { type: "number", integer: true, min: 1, max: 65535, convert: true, optional: true } as const;

/** A row's own fields: what a node registers and an operator may change (PUT /:id). */
const REGISTRATION_PARAMS = { ip: IP_PARAM, artifactId: ARTIFACT_ID_PARAM, pingable: { ...BOOLEAN_PARAM, optional: true }, sshPort: SSH_PORT_PARAM };

/**
 * /api/localnodes: installed hosts register here from their post-boot script
 * (POST /api/localnodes?ip=…&artifactId=…&pingable=true[&sshPort=2222]). Registering again updates the row.
 * `reachable` is checked in the background from the site's distributor (its SSH port answers);
 * PUT /:id/script runs a script as root on the node over SSH from that distributor.
 */
export const LocalnodesService: ServiceSchema = defineService<LocalnodesMethods, LocalnodesVars, LocalnodesSettings>({
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
				/** SSH host key fingerprint an operator accepted (or an enrolled registration gave); scripts go only to it. */
				hostKey: { type: DataTypes.STRING(128), allowNull: true },
				sshPort: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 22 },
			},
			params: REGISTRATION_PARAMS,
			// The unique (ip, artifactId) above is the registration's upsert key and the lookup by ip; these serve
			// the search by site and the reachability pass's batches (a site's never-checked nodes, then its stalest),
			// and on PostgreSQL the lists' substring search by ip (trigrams; see core/db.ts).
			modelOptions: {
				indexes: [
					{ name: "localnodes_site_checked", fields: ["artifactId", "reachableCheckedAt", "id"] },
					{ name: "localnodes_ip_search", fields: ["ip"], using: "gin", operator: "gin_trgm_ops" },
				],
			},
		}),
	],
	settings: { reachabilityIntervalMs: REACHABILITY_INTERVAL_MS, reachabilityCoalesceMs: REACHABILITY_COALESCE_MS, reachBatchesPerPass: REACH_BATCHES_PER_PASS, sitesPerPass: SITES_PER_PASS },
	hooks: {
		before: {
			update(ctx: Context<{ ip?: string }>) {
				if (ctx.params.ip === undefined) return;
				ctx.params.ip = canonicalIp(ctx.params.ip);
				this.refuseLoopback(ctx.params.ip);
			},
		},
		after: {
			// An operator moved the node (address or SSH port): it is checked in the next pass.
			update(_ctx: Context, row: { id: number; artifactId: string }) {
				this.reachabilityDue(row.artifactId, row.id);
				return row;
			},
		},
	},
	actions: {
		create: {
			description: "A node registers itself (its post-boot script; no token needed). Registering again never changes where scripts go (sshPort) unless an operator does it; a site with a required enrolment takes only registrations carrying its enrolmentToken",
			params: { ...REGISTRATION_PARAMS, hostKey: HOST_KEY_PARAM, enrolmentToken: { type: "string", optional: true, max: 200 }, machineToken: { type: "string", optional: true, max: 200 }, mac: { type: "string", optional: true, max: 64 }, $$strict: true },
			// Machines (packages/machines): a machine's registration token is checked before anything is written (wrong,
			// replayed or past the deadline: 401; another site than the machine's: 409), and used up only after the
			// registration passed its own checks, when the node is linked to its machine (by that token, or else by MAC).
			hooks: {
				async before(ctx: Context<Registration & { machineToken?: string | null; mac?: string | null }, LocalnodeMeta>) {
					// A query string's empty or a JSON null is no token and no MAC (fastest-validator's `optional` lets null through).
					const token = ctx.params.machineToken ?? undefined;
					const mac = ctx.params.mac ?? undefined;
					if (!this.broker.registry.getActionEndpoints("machines.admitRegistration")?.hasAvailable()) {
						if (token !== undefined) throw new UnavailableError("the machines service is not running: a machineToken cannot be checked");
						return;
					}
					ctx.locals.machine = await ctx.call("machines.admitRegistration", { token, mac, artifactId: ctx.params.artifactId, operator: Boolean(ctx.meta.caller && !ctx.meta.caller.readOnly) });
				},
				async after(ctx: Context<unknown, LocalnodeMeta>, reply: { id: number }) {
					if (ctx.locals.machine) await ctx.call("machines.linkLocalnode", { ...ctx.locals.machine, localnodeId: reply.id }).catch((err: Error) => this.logger.warn(`localnode ${reply.id} registered, but not linked to its machine: ${err.message}`));
					return reply;
				},
			},
			async handler(ctx: Context<Registration, LocalnodeMeta>) {
				ctx.params.ip = canonicalIp(ctx.params.ip);
				const { ip, artifactId } = ctx.params;
				this.refuseLoopback(ip);
				const enrolled = await this.registrationStanding(ctx);
				this.limitRegistrations(ctx);
				const existing = await this.adapter.findOne({ where: { ip, artifactId } });
				if (existing) return this.registerAgain(ctx, existing.get({ plain: true }), enrolled);
				const { pingable, sshPort, hostKey } = ctx.params;
				const fields = { ip, artifactId, ...(pingable === undefined ? {} : { pingable }), ...(sshPort === undefined ? {} : { sshPort }), ...(enrolled && hostKey ? { hostKey: hostKeyFingerprint("hostKey", hostKey) } : {}) };
				try {
					const row = await this._create(ctx, fields);
					// Checked soon, with the rest of its burst, never on its request's path: one scheduled pass per site.
					this.reachabilityDue(artifactId);
					return respondCreated(ctx, this.registrationReply(ctx, row), `/api/localnodes/${row.id}`);
				} catch (err) {
					// Two registrations raced; the unique index kept one row: this one registers again.
					if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
					const row = await this.adapter.findOne({ where: { ip, artifactId } });
					if (!row) throw err;
					return this.registerAgain(ctx, row.get({ plain: true }), enrolled);
				}
			},
		},
		hostKey: {
			rest: "GET /:id/hostkey",
			description: "The node's recorded host key and the one its SSH server presents now (read through its site's distributor), to compare before accepting it",
			params: { id: ID_PARAM, $$strict: true },
			async handler(ctx: Context<{ id: number }>) {
				const node: NodeRow = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				return { id: node.id, recorded: node.hostKey, presented: await this.presentedHostKey(ctx, node) };
			},
		},
		acceptHostKey: {
			rest: "PUT /:id/hostkey",
			description: "Accept the node's SSH host key (SHA256:… fingerprint or public key line): scripts go only to a node presenting it",
			params: { id: ID_PARAM, hostKey: { type: "string", max: 16 * 1024 }, $$strict: true },
			async handler(ctx: Context<{ id: number; hostKey: string }>) {
				await this.findOrFail(ctx.params.id);
				const row = await this.adapter.updateById(ctx.params.id, { $set: { hostKey: hostKeyFingerprint("hostKey", ctx.params.hostKey) } });
				const json = await this.transformDocuments(ctx, {}, row);
				await this.entityChanged("updated", json, ctx);
				return json;
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
				/** The host key the operator accepts with this run, for a node that has none recorded. */
				hostKey: HOST_KEY_PARAM,
				/** Seconds the script may run. */
				timeout: { type: "number", integer: true, min: 1, max: 3600, convert: true, default: SCRIPT_TIMEOUT_DEFAULT_S },
				$$strict: true,
			},
			async handler(ctx: Context<ScriptRequest, RequestMeta>): Promise<ScriptOutcome | Readable> {
				const row = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				const privateKey = await this.privateKeyFor(ctx, row.artifactId);
				const nodeID = await this.distributorOf(ctx, row.artifactId);
				const node = { ...row, hostKey: row.hostKey ?? (await this.hostKeyToAccept(ctx, row, nodeID)) };
				const timeoutMs = ctx.params.timeout * 1000;
				const audit = await this.beginAudit(ctx, node);
				if (STREAM_ACCEPT.test(ctx.meta.accept ?? "")) return this.streamScript(ctx, node, { privateKey, nodeID, timeoutMs, auditId: audit.id });
				let result: ScriptResult;
				try {
					result = await ctx.call<ScriptResult, object>(
						`${WORKER_SERVICE}.runScript`,
						{ ip: node.ip, port: node.sshPort, script: ctx.params.script, privateKey, expectedHostKey: node.hostKey, timeoutMs },
						{ nodeID, timeout: timeoutMs + 15_000 },
					);
				} catch (err) {
					await ctx.call("scriptruns.finish", { id: audit.id, code: null, error: (err as Error).message });
					throw err;
				}
				await ctx.call("scriptruns.finish", { id: audit.id, code: result.code, signal: result.signal ?? null });
				await this.adapter.updateById(node.id, { $set: { hostKey: node.hostKey, reachable: true, reachableCheckedAt: new Date() } });
				return { code: result.code, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
			},
		},
	},
	methods: {
		refuseLoopback(ip: string): void {
			const address = unmapped(ip);
			if (LOOPBACK.check(address, familyOf(address)) && !configOf(this.broker).allowLoopbackNodes) {
				invalid("ip", "must not be a loopback address: the site's distributor would run scripts on itself (ALLOW_LOOPBACK_NODES=true for a lab of stand-in nodes)");
			}
		},
		/** True for an operator's or an enrolled registration; refuses one a site's required enrolment lacks. */
		async registrationStanding(ctx: Context<Registration, LocalnodeMeta>): Promise<boolean> {
			const caller = ctx.meta.caller;
			if (caller && !caller.readOnly) return true;
			// No enrolments service in this cluster: no site can require enrolment. One that is there and
			// fails fails the registration: a site's requirement is never skipped.
			const enrolments = this.broker.registry.getActionEndpoints("enrolments.check")?.hasAvailable();
			const standing: EnrolmentCheck = enrolments ? await ctx.call("enrolments.check", { artifactId: ctx.params.artifactId, token: ctx.params.enrolmentToken }) : "not-required";
			if (standing === "refused") {
				throw new Errors.MoleculerClientError(`site "${ctx.params.artifactId}" takes only enrolled registrations: send its enrolmentToken`, 401, "ENROLMENT_REQUIRED", [{ field: "enrolmentToken", message: ctx.params.enrolmentToken ? "is not this site's enrolment token" : "is required by this site" }]);
			}
			return standing === "enrolled";
		},
		/** Registrations not made by an operator, counted per source (enrolled ones too: the token is only as secret as the post-boot script). */
		limitRegistrations(ctx: Context<Registration, LocalnodeMeta>): void {
			if (ctx.meta.caller && !ctx.meta.caller.readOnly) return;
			const { burst, perSecond } = configOf(this.broker).registrationLimit;
			this.registrations ??= new RateLimiter(burst, perSecond);
			const source = rateKeyOf(ctx.meta.remoteAddress);
			const wait = this.registrations.take(source);
			if (wait > 0) {
				ctx.meta.$responseHeaders = { "Retry-After": String(wait) };
				throw new Errors.MoleculerClientError(`too many registrations from ${source}: at most ${burst} at once, then ${perSecond} a second`, 429, "TOO_MANY_REGISTRATIONS", { retryAfter: wait });
			}
		},
		/**
		 * A node that is known registers again (a reboot, a rerun post-boot script): it may say it is
		 * pingable, nothing more. Where its scripts go — its address and SSH port — and its host key
		 * change only through an operator; an enrolled node pins its key only with the row it creates.
		 */
		async registerAgain(ctx: Context<Registration, LocalnodeMeta>, row: NodeRow, enrolled: boolean) {
			const { pingable, sshPort, hostKey } = ctx.params;
			const operator = Boolean(ctx.meta.caller && !ctx.meta.caller.readOnly);
			if (sshPort !== undefined && sshPort !== row.sshPort && !operator) {
				throw new ConflictError(`node ${row.id} (${row.ip}) is registered with SSH port ${row.sshPort}: registering again does not move it; an operator does (PUT /api/localnodes/${row.id})`, { field: "sshPort" });
			}
			const changes: Partial<NodeRow> = { ...(pingable === undefined ? {} : { pingable }), ...(operator && sshPort !== undefined ? { sshPort } : {}) };
			if (hostKey && (enrolled || operator)) {
				const key = hostKeyFingerprint("hostKey", hostKey);
				if (operator) changes.hostKey = key;
				else if (row.hostKey !== key) {
					throw new ConflictError(`node ${row.id} ${row.hostKey ? `has host key ${row.hostKey} accepted` : "has no host key accepted"}: an operator accepts one (PUT /api/localnodes/${row.id}/hostkey)`, { field: "hostKey" });
				}
			}
			const updated = await this.adapter.updateById(row.id, { $set: changes });
			const json = await this.transformDocuments(ctx, {}, updated);
			await this.entityChanged("updated", json, ctx);
			// A node registering again has (re)booted: it is checked in the next pass, before the stalest.
			this.reachabilityDue(row.artifactId, row.id);
			return this.registrationReply(ctx, json);
		},
		/** What a registering node is told: its row to an operator, its id and address to a node. */
		registrationReply(ctx: Context<Registration, LocalnodeMeta>, row: EntityJson<LocalnodeColumns>) {
			if (ctx.meta.caller) return row;
			return { id: row.id, ip: row.ip, artifactId: row.artifactId, pingable: row.pingable, sshPort: row.sshPort, hostKeyAccepted: Boolean(row.hostKey) };
		},
		async presentedHostKey(ctx: Context, node: NodeRow, nodeID?: string): Promise<string> {
			const site = nodeID ?? (await this.distributorOf(ctx, node.artifactId));
			return ctx.call(`${WORKER_SERVICE}.hostKey`, { ip: node.ip, port: node.sshPort }, { nodeID: site, timeout: 20_000 });
		},
		/**
		 * A node without an accepted host key gets a script only when the operator names the key with
		 * the run (checked by the distributor against what the node presents); otherwise the run is
		 * refused, showing the key the node presents, for the operator to compare and accept.
		 */
		async hostKeyToAccept(ctx: Context<ScriptRequest>, node: NodeRow, nodeID: string): Promise<string> {
			if (ctx.params.hostKey) return hostKeyFingerprint("hostKey", ctx.params.hostKey);
			const presented = await this.presentedHostKey(ctx, node, nodeID).catch((err: Error) => `unknown (${err.message})`);
			throw new ConflictError(
				`node ${node.id} (${node.ip}) has no accepted SSH host key; it presents ${presented}. Compare it with the node's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on its console), then accept it: PUT /api/localnodes/${node.id}/hostkey {"hostKey": "…"}, or send "hostKey" with this script`,
				{ field: "hostKey", presented },
			);
		},
		/**
		 * The script's output as NDJSON records while it runs (see ScriptRecord), for clients that
		 * send Accept: application/x-ndjson. The run is audited as the buffered one: begun before,
		 * finished with the last record's exit status (or the error that ended the stream).
		 */
		async streamScript(ctx: Context<ScriptRequest, RequestMeta>, node: NodeRow & { hostKey: string }, run: { privateKey: string; nodeID: string; timeoutMs: number; auditId: number }): Promise<Readable> {
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
					// The host key is the provisioner's business, not the client's.
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
						// The run presented the accepted key (the worker refuses any other): it is the node's now.
						await this.adapter.updateById(node.id, { $set: { hostKey: node.hostKey, reachable: true, reachableCheckedAt: new Date() } });
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
		async beginAudit(ctx: Context<ScriptRequest>, node: { id: number; ip: string; artifactId: string }): Promise<{ id: number }> {
			try {
				return await ctx.call("scriptruns.begin", { localnodeId: node.id, ip: node.ip, artifactId: node.artifactId, script: ctx.params.script });
			} catch (err) {
				if ((err as Error).name === "ServiceNotFoundError") throw new UnavailableError("the audit log (scriptruns service) is not running: scripts are not run unaudited");
				throw err;
			}
		},
		/** The key named in the request, or else the newest private key stored for the node's site. */
		async privateKeyFor(ctx: Context<ScriptRequest>, artifactId: string): Promise<string> {
			if (ctx.params.privateKey) {
				// A key that is no key is the request's fault (422), before anything asks the node.
				checkPrivateKey("privateKey", ctx.params.privateKey);
				return ctx.params.privateKey;
			}
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
		async distributorOf(ctx: Context, artifactId: string): Promise<string> {
			try {
				const { nodeID } = await ctx.call<{ nodeID: string }, { artifactId: string }>("distributors.siteNode", { artifactId });
				// The site's secrets go only to a node of that site (core/bus.ts), whoever answered.
				if (!mayActForSite(this.broker, nodeID, artifactId)) throw new UnavailableError(`no distributor for site "${artifactId}" is online (node ${nodeID} is not one of the site's)`, { artifactId });
				return nodeID;
			} catch (err) {
				if ((err as Error).name === "ServiceNotFoundError") throw new UnavailableError(`no distributor for site "${artifactId}" is online (the distributors service is not running)`, { artifactId });
				throw err;
			}
		},
		/**
		 * Mark a site as due for a reachability pass (and a re-registered node as due within it), and
		 * schedule one pass for the burst: O(1) per registration, whatever the fleet's size. What is
		 * remembered is bounded (see Reachability.markDue); whatever does not fit is checked by the
		 * site's scheduled pass (never-checked nodes first, then the stalest).
		 */
		reachabilityDue(artifactId: string, id?: number): void {
			this.reachability.markDue(artifactId, id);
			this.scheduleReachability();
		},
		/** One pass for everything due, `reachabilityCoalesceMs` after the first registration of a burst (or after the pass in flight). */
		scheduleReachability(): void {
			const state = this.reachability;
			if (state.timer || state.run || state.stopping) return;
			state.timer = setTimeout(() => {
				state.timer = null;
				void this.refreshReachability("due");
			}, this.settings.reachabilityCoalesceMs);
		},
		/**
		 * A reachability pass: "due" checks the sites registrations marked, "schedule" also every site
		 * with an online distributor. One pass at a time, never on a request's path; each site's work
		 * in a pass is at most `reachBatchesPerPass` batches of REACH_BATCH nodes.
		 */
		async refreshReachability(kind: PassKind = "schedule"): Promise<void> {
			const state = this.reachability;
			if (state.run) return state.run;
			state.run = this.reachabilityPass(kind)
				.catch((err: Error) => this.logger.warn(`reachability check failed: ${err.message}`))
				.finally(() => {
					state.run = null;
					if (state.due.size > 0) this.scheduleReachability();
				});
			return state.run;
		},
		async reachabilityPass(kind: PassKind): Promise<void> {
			const state = this.reachability;
			const due = state.takeDue();
			// Without a distributors manager in the cluster there is nobody to check from: the nodes stay
			// never-checked, and the first scheduled pass with a distributor online takes them first.
			if (!this.adapter?.model || !this.broker.registry.getActionEndpoints("distributors.siteNode")?.hasAvailable()) return;
			state.stats.passes++;
			const checkedBefore = state.stats.nodesChecked;
			const sites = new Map<string, Set<number>>(due);
			if (kind === "schedule") for (const artifactId of await this.onlineSites()) if (!sites.has(artifactId)) sites.set(artifactId, new Set());
			for (const [artifactId, ids] of sites) {
				const site = await this.broker.call<{ nodeID: string }, { artifactId: string }>("distributors.siteNode", { artifactId }).catch(() => null);
				// No distributor of the site online: nothing to check from (its schedule takes the nodes later).
				if (!site) continue;
				// One site's failure (its distributor gone mid-check) costs only that site's pass: it is due again.
				const more = await this.checkSite(artifactId, site.nodeID, ids, kind === "schedule").catch((err: Error) => {
					this.logger.warn(`reachability check of site ${artifactId} failed: ${err.message}`);
					return true;
				});
				// A burst larger than a pass's budget (or a failed check): the site's remaining nodes go in the next pass.
				if (more) this.reachabilityDue(artifactId);
			}
			state.stats.largestPass = Math.max(state.stats.largestPass, state.stats.nodesChecked - checkedBefore);
		},
		/**
		 * The next `sitesPerPass` sites with an online distributor (in the distributors' id order): a
		 * scheduled pass takes one page and the next pass the page after it, back to the first after
		 * the last, so every site gets its turn however many there are.
		 */
		async onlineSites(): Promise<string[]> {
			const state = this.reachability;
			const limit = this.settings.sitesPerPass;
			const page = (offset: number) =>
				this.broker.call<{ artifactId: string }[], object>("distributors.find", { query: { online: true }, fields: ["artifactId"], sort: "id", offset, limit }).catch(() => []);
			let online = await page(state.sitesOffset);
			// Sites went offline since the last page: start again from the first.
			if (online.length === 0 && state.sitesOffset > 0) {
				state.sitesOffset = 0;
				online = await page(0);
			}
			state.advanceSites(online.length, limit);
			return online.map((row) => row.artifactId);
		},
		/**
		 * One site's bounded batch: the nodes named (re-registered), then never-checked ones, then (on
		 * the schedule) those whose check is older than the interval, stalest first; all through the
		 * (artifactId, reachableCheckedAt, id) index. True when never-checked nodes were left over.
		 */
		async checkSite(artifactId: string, nodeID: string, ids: Set<number>, stale: boolean): Promise<boolean> {
			const model = this.adapter.model;
			const budget = REACH_BATCH * this.settings.reachBatchesPerPass;
			const attributes = ["id", "ip", "sshPort"];
			const nodes = new Map<number, ReachTarget>();
			const take = (rows: ReachTarget[]) => {
				for (const row of rows) if (nodes.size < budget) nodes.set(row.id, row);
			};
			if (ids.size > 0) take(await model.findAll({ where: { artifactId, id: { [Op.in]: [...ids].slice(0, budget) } }, attributes, raw: true }));
			const fresh = budget - nodes.size;
			let more = false;
			if (fresh > 0) {
				const never = await model.findAll({ where: { artifactId, reachableCheckedAt: null }, order: [["id", "ASC"]], limit: fresh, attributes, raw: true });
				more = never.length === fresh;
				take(never);
			}
			if (stale && nodes.size < budget) {
				const cutoff = new Date(Date.now() - this.settings.reachabilityIntervalMs);
				take(await model.findAll({ where: { artifactId, reachableCheckedAt: { [Op.lt]: cutoff } }, order: [["reachableCheckedAt", "ASC"], ["id", "ASC"]], limit: budget - nodes.size, attributes, raw: true }));
			}
			this.reachability.stats.rowsRead += nodes.size;
			const byPort = new Map<number, ReachTarget[]>();
			for (const node of nodes.values()) byPort.set(node.sshPort, [...(byPort.get(node.sshPort) ?? []), node]);
			for (const [port, onPort] of byPort) {
				// In batches the distributor's `reach` takes: one site's fleet never fails the whole check.
				for (let at = 0; at < onPort.length; at += REACH_BATCH) {
					const batch = onPort.slice(at, at + REACH_BATCH);
					const reached = await this.broker.call<Record<string, boolean>, object>(`${WORKER_SERVICE}.reach`, { ips: [...new Set(batch.map((n) => n.ip))], port, timeoutMs: REACH_TIMEOUT_MS }, { nodeID, timeout: REACH_TIMEOUT_MS + 10_000 });
					this.reachability.stats.reachCalls++;
					this.reachability.stats.nodesChecked += batch.length;
					const now = new Date();
					for (const answer of [true, false, null]) {
						const matching = batch.filter((n) => (reached[n.ip] ?? null) === answer).map((n) => n.id);
						if (matching.length > 0) await model.update({ reachable: answer, reachableCheckedAt: now }, { where: { id: { [Op.in]: matching } }, hooks: false, silent: true });
					}
				}
			}
			return more;
		},
	},
	created() {
		this.reachability = new Reachability();
	},
	started() {
		this.reachabilityTimer = setInterval(() => void this.refreshReachability("schedule"), this.settings.reachabilityIntervalMs);
	},
	async stopped() {
		this.reachability.stopping = true;
		clearInterval(this.reachabilityTimer);
		clearTimeout(this.reachability.timer ?? undefined);
		await this.reachability.run;
	},
});

export { ScriptRunsService } from "./scriptruns";
export { EnrolmentsService, type EnrolmentCheck } from "./enrolments";

export default LocalnodesService;
