import type { ActionSchema, Context, Service } from "moleculer";
import { mayActForSite } from "./bus";
import { DataTypes, Op } from "./db";
import type { DnsmasqState, DnsmasqStatus } from "./dnsmasq-supervisor";
import { UnavailableError, invalid } from "./errors";
import type { EntityJson, EntityMethods, EntityRow, EntityVars } from "./registry";
import { ARTIFACT_ID_PARAM } from "./rest";
import { defineMixin } from "./service-schema";

/**
 * The manager half of a site service (distributors, site DNS): a row per site worker, the state
 * its dnsmasq reports, and commands carried out by the worker's own node only. The worker half is
 * site-worker.ts.
 */

/** A site-side worker as the service registry shows it. */
export interface SiteWorker {
	nodeID: string;
	artifactId: string;
	/** What its row is keyed by (a persisted identity, or the site tag itself). */
	key: string;
}

/** The columns every site-worker row has (SITE_WORKER_FIELDS and the site tag), as stored. */
export interface SiteWorkerColumns {
	artifactId: string;
	nodeID: string;
	online: boolean;
	lastSeen: Date | null;
	on: boolean;
	state: DnsmasqState;
	stateReason: string | null;
}

export interface SiteWorkersOptions<Status extends DnsmasqStatus> {
	/** The worker service's name, e.g. "distributor-worker". */
	workerService: string;
	/** The row column, service-metadata field and state-event field that identify a worker's row. */
	keyColumn: "identity" | "artifactId";
	/** The event the worker's dnsmasq state arrives as (site-worker.ts broadcasts it). */
	stateEvent: string;
	/** What a row is called in answers: "distributor", "DNS". */
	noun: string;
	/** The worker's `status` action answer → row columns, read when a worker (re)connects. */
	statusColumns(status: Status): Record<string, unknown>;
}

const SYNC_INTERVAL_MS = 10_000;
/** A worker that does not answer its status within this is recorded as it was. */
const STATUS_TIMEOUT_MS = 10_000;

/** The columns of SITE_WORKER_FIELDS as the API answers them. */
export interface SiteWorkerRow {
	id: number;
	artifactId: string;
	nodeID: string;
	online: boolean;
	lastSeen: string | null;
	on: boolean;
	state: string;
	stateReason: string | null;
}

/**
 * The columns every site-worker row has besides its key: the node it runs on, whether it is there,
 * and the state of the process it supervises (dnsmasq) with the reason when that is not running.
 */
export const SITE_WORKER_FIELDS = {
	nodeID: { type: DataTypes.STRING(255), allowNull: false },
	online: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
	lastSeen: { type: DataTypes.DATE, allowNull: true },
	on: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
	state: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "off" },
	stateReason: { type: DataTypes.TEXT, allowNull: true },
};

/** A state event's or status answer's dnsmasq part → the row's columns. */
export function stateColumns(status: DnsmasqStatus): Pick<SiteWorkerColumns, "on" | "state" | "stateReason"> {
	return { on: status.on, state: status.state, stateReason: status.reason };
}

/** What siteWorkersMixin adds to its service, and what a site service's own actions use. */
export interface SiteWorkersMethods<Columns extends SiteWorkerColumns = SiteWorkerColumns> {
	/** Workers as the registry shows them, only those whose node ID names the site they claim. */
	connectedWorkers(): SiteWorker[];
	isWorkerNode(nodeID: string): boolean;
	warnOnce(message: string): void;
	/** Update a row and tell caches and listeners, as the REST actions do. */
	record(ctx: Context, id: number, changes: Partial<Columns>): Promise<EntityJson<Columns>>;
	/** The row, if its worker is connected now; 503 otherwise. `artifactId`, when a string, must be the row's site. */
	commandable(id: number, artifactId?: unknown): Promise<Columns & { id: number }>;
	/**
	 * Carry out `action` on the worker of a row, on that row's own node: the row and the answer.
	 * `target` is the REST call's params: the row's id, and the site tag a client may echo.
	 */
	commandRow<Answer>(ctx: Context, target: CommandTarget, action: string, params: object, options: CommandOptions): Promise<{ row: Columns & { id: number }; answer: Answer }>;
	/** The row and node of an online worker of a site (the latest seen); 503 if none. */
	siteNode(artifactId: string): Promise<{ id: number; nodeID: string }>;
	/** Carry out `action` on the worker that holds a site, on its node. */
	callOnSite<Answer>(ctx: Context, artifactId: string, action: string, params: object, options: CommandOptions): Promise<Answer>;
	requestSync(): Promise<void>;
	syncWorkers(): Promise<void>;
}

export interface CommandTarget {
	id: number;
	artifactId?: unknown;
}

export interface CommandOptions {
	/** How long the worker may take (downloads, a dnsmasq restart). */
	timeout: number;
}

interface SiteWorkersVars<Columns extends SiteWorkerColumns> extends EntityVars<Columns> {
	syncTimer?: NodeJS.Timeout;
	syncing?: Promise<void>;
	warned?: Set<string>;
}

/** `this` in a site-worker manager (the mixin's and its service's own actions). */
type SiteWorkersHost<Columns extends SiteWorkerColumns> = SiteWorkersMethods<Columns> & EntityMethods<Columns>;

/** The plain columns of a row (moleculer-db's adapter hands over model instances). */
function plain<Columns extends SiteWorkerColumns>(row: EntityRow<Columns>): Columns & { id: number } {
	return row.get({ plain: true }) as Columns & { id: number };
}

/**
 * Rows that follow site-side workers (distributors, site DNS): a row per worker, created when it
 * appears in the service registry, `online`/`nodeID`/`lastSeen` kept current from Moleculer's node
 * events and a periodic sync, its status read when it (re)connects and its dnsmasq state from the
 * worker's state events. Commands then go to the row's own node, never to another worker. The
 * service's entity needs artifactId, the key column and SITE_WORKER_FIELDS.
 */
export function siteWorkersMixin<Status extends DnsmasqStatus, Columns extends SiteWorkerColumns = SiteWorkerColumns>(options: SiteWorkersOptions<Status>) {
	const { keyColumn, workerService, noun } = options;
	return defineMixin<SiteWorkersHost<Columns>, SiteWorkersVars<Columns>>({
		events: {
			"$services.changed"() {
				void this.requestSync();
			},
			"$node.disconnected"() {
				void this.requestSync();
			},
			[options.stateEvent]: {
				async handler(ctx: Context<DnsmasqStatus & Partial<Record<typeof keyColumn, unknown>>>) {
					const key = ctx.params[keyColumn];
					if (typeof key !== "string") return;
					const row = await this.adapter.findOne({ where: { [keyColumn]: key } as Partial<Columns> });
					// Only a node of the row's own site reports its state (core/bus.ts).
					if (row && mayActForSite(this.broker, ctx.nodeID!, row.artifactId)) await this.record(ctx, row.id, stateColumns(ctx.params) as Partial<Columns>);
				},
			},
		},
		methods: {
			/**
			 * Workers as the registry shows them — only those whose node ID names the site they claim
			 * (bus.ts): a node of site A that says it serves site B would otherwise be sent B's scripts.
			 */
			connectedWorkers(): SiteWorker[] {
				const services = this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true, withActions: false }) as { name: string; nodeID: string; metadata?: Record<string, unknown> }[];
				return services
					.filter((s) => s.name === workerService && s.metadata?.[keyColumn] && s.metadata?.artifactId)
					.map((s) => ({ nodeID: s.nodeID, artifactId: String(s.metadata!.artifactId), key: String(s.metadata![keyColumn]) }))
					.filter((worker) => {
						if (mayActForSite(this.broker, worker.nodeID, worker.artifactId)) return true;
						this.warnOnce(`node ${worker.nodeID} claims to be a ${workerService} of site "${worker.artifactId}", which its node ID does not name: ignored`);
						return false;
					});
			},
			warnOnce(message: string): void {
				this.warned ??= new Set<string>();
				if (this.warned.has(message) || this.warned.size > 1000) return;
				this.warned.add(message);
				this.logger.warn(message);
			},
			isWorkerNode(nodeID: string): boolean {
				return this.connectedWorkers().some((w) => w.nodeID === nodeID);
			},
			async record(ctx: Context, id: number, changes: Partial<Columns>): Promise<EntityJson<Columns>> {
				const row = await this.adapter.updateById(id, { $set: changes });
				const json = await this.transformDocuments(ctx, {}, row);
				await this.entityChanged("updated", json, ctx);
				return json;
			},
			async commandable(id: number, artifactId?: unknown): Promise<Columns & { id: number }> {
				const row = plain(await this.findOrFail(id));
				if (typeof artifactId === "string" && artifactId !== row.artifactId) invalid("artifactId", `${noun} ${id} belongs to site "${row.artifactId}", not "${artifactId}"`);
				if (!this.isWorkerNode(row.nodeID)) {
					throw new UnavailableError(`${noun} ${id} (${row.artifactId}) is offline${row.lastSeen ? `, last seen ${new Date(row.lastSeen).toISOString()}` : ""}`, { id });
				}
				return row;
			},
			async commandRow<Answer>(ctx: Context, target: CommandTarget, action: string, params: object, command: CommandOptions) {
				const row = await this.commandable(target.id, target.artifactId);
				const answer = await ctx.call<Answer, object>(`${workerService}.${action}`, params, { nodeID: row.nodeID, timeout: command.timeout });
				return { row, answer };
			},
			async siteNode(artifactId: string): Promise<{ id: number; nodeID: string }> {
				const rows = await this.adapter.find({ query: { artifactId, online: true } as Partial<Columns>, sort: ["-lastSeen"] });
				const live = rows.map((r) => plain(r)).find((r) => this.isWorkerNode(r.nodeID));
				if (!live) throw new UnavailableError(`no ${noun} for site "${artifactId}" is online`, { artifactId });
				return { id: live.id, nodeID: live.nodeID };
			},
			async callOnSite<Answer>(ctx: Context, artifactId: string, action: string, params: object, command: CommandOptions): Promise<Answer> {
				const { nodeID } = await this.siteNode(artifactId);
				return ctx.call<Answer, object>(`${workerService}.${action}`, params, { nodeID, timeout: command.timeout });
			},
			/** Serialised: the registry fires bursts of changes, and each sync reads then writes rows. */
			requestSync(): Promise<void> {
				this.syncing = (this.syncing ?? Promise.resolve())
					.then(() => this.syncWorkers())
					.catch((err: Error) => this.logger.warn(`${workerService} sync failed: ${err.message}`));
				return this.syncing;
			},
			async syncWorkers(): Promise<void> {
				if (!this.adapter?.model) return;
				const workers = this.connectedWorkers();
				const now = new Date();
				const present: string[] = [];
				for (const worker of workers) {
					const existing = await this.adapter.findOne({ where: { [keyColumn]: worker.key } as Partial<Columns> });
					// A row stays with its site: another site's node presenting this row's identity is not it.
					if (existing && existing.artifactId !== worker.artifactId) {
						this.warnOnce(`node ${worker.nodeID} of site "${worker.artifactId}" presents the identity of ${workerService} row ${existing.id} of site "${existing.artifactId}": ignored`);
						continue;
					}
					// While the row's node is still connected, another node presenting its identity is not it.
					if (existing?.online && existing.nodeID !== worker.nodeID && workers.some((w) => w.nodeID === existing.nodeID)) {
						this.warnOnce(`node ${worker.nodeID} presents the identity of ${workerService} row ${existing.id}, whose node ${existing.nodeID} is still connected: ignored`);
						continue;
					}
					present.push(worker.key);
					const fresh = !existing || !existing.online || existing.nodeID !== worker.nodeID;
					const changes = { artifactId: worker.artifactId, nodeID: worker.nodeID, online: true, lastSeen: now } as Partial<Columns>;
					const id = existing ? existing.id : (await this.adapter.insert({ [keyColumn]: worker.key, ...changes })).id;
					if (existing) await this.adapter.updateById(id, { $set: changes });
					if (fresh) {
						// A worker that (re)connects reports what it is doing, e.g. serving since before a restart.
						const status = await this.broker.call<Status, object>(`${workerService}.status`, {}, { nodeID: worker.nodeID, timeout: STATUS_TIMEOUT_MS }).catch(() => null);
						if (status) await this.adapter.updateById(id, { $set: options.statusColumns(status) as Partial<Columns> });
					}
				}
				const gone = await this.adapter.find({ query: { online: true, [keyColumn]: { [Op.notIn]: present.concat([""]) } } as Partial<Columns> });
				for (const row of gone) await this.adapter.updateById(row.id, { $set: { online: false } as Partial<Columns> });
			},
		},
		started() {
			this.syncTimer = setInterval(() => void this.requestSync(), SYNC_INTERVAL_MS);
			void this.requestSync();
		},
		async stopped() {
			clearInterval(this.syncTimer);
			await this.syncing;
		},
	});
}

/** `this` in routedToSite's handler: a service with siteWorkersMixin. */
type RoutingHost = Service & Pick<SiteWorkersMethods, "callOnSite">;

/**
 * A manager action carried out by the worker that holds a site: the caller names the site
 * (`artifactId`), the manager picks that site's online worker node (never another site's, see
 * `siteNode`) and calls the worker's action `action` there with the other params. For cluster
 * services (e.g. a BMC call that only the site's LAN can reach), not published over REST.
 */
export function routedToSite(action: string, params: Record<string, unknown>, options: CommandOptions): ActionSchema<RoutingHost> {
	return {
		visibility: "public",
		params: { artifactId: ARTIFACT_ID_PARAM, ...params },
		handler(ctx: Context<{ artifactId: string } & Record<string, unknown>>) {
			const { artifactId, ...rest } = ctx.params;
			return this.callOnSite(ctx, artifactId, action, rest, options);
		},
	};
}
