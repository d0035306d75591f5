import { Errors, type Context, type ServiceSchema } from "moleculer";
import {
	ARTIFACT_ID_PARAM,
	BOOLEAN_PARAM,
	DEVICE_PATTERN,
	DataTypes,
	ID_PARAM,
	IPV4_PATTERN,
	SITE_WORKER_FIELDS,
	defineService,
	entityMixin,
	routedToSite,
	siteWorkersMixin,
	stateColumns,
	UnavailableError,
	type EntityMethods,
	type EntityVars,
	type SiteWorkerColumns,
	type SiteWorkerRow,
	type SiteWorkersMethods,
} from "@clusterplatform/core";
import { BMC_PARAMS, BMC_ROUTE_TIMEOUT_MS } from "./bmc";
import type { DistributorSettings, WorkerStatus } from "./site";
import { checkUrl } from "./validation";
import { STATE_EVENT, WORKER_SERVICE } from "./worker";

/** Downloading the iPXE binaries (two to four) and restarting dnsmasq on the worker. */
const CONFIGURE_TIMEOUT_MS = 180_000;
const STATUS_TIMEOUT_MS = 30_000;
/** Reading a site's known MACs (up to 100,000) from the machines service, and pushing them to its distributor. */
const KNOWN_MACS_TIMEOUT_MS = 60_000;
/** Changes to a site's machines within this are pushed once (an import, a burst of edits). */
const KNOWN_MACS_DEBOUNCE_MS = 500;

const URL_RULE = (field: string, optional = false) => ({
	type: "string",
	optional,
	nullable: optional,
	custom: (value: unknown, errors: { type: string; actual: unknown; field?: string; message?: string }[]) => {
		if (value === null || value === undefined) return value;
		try {
			checkUrl(field, value);
		} catch (err) {
			errors.push({ type: "url", actual: value, message: (err as Error).message.replace(/^[^:]+: /, "") });
		}
		return value;
	},
});

/** A row of /api/distributors, as the API answers it. */
export interface DistributorRow extends SiteWorkerRow {
	device: string | null;
	range: string | null;
	ipxePxeUefiUrl: string | null;
	ipxePxeBiosUrl: string | null;
	ipxePxeUefiIa32Url: string | null;
	ipxePxeUefiArm64Url: string | null;
	scriptUrl: string | null;
	knownMachinesOnly: boolean;
}

const IPV4_RULE = {
	type: "string",
	pattern: IPV4_PATTERN,
	messages: { stringPattern: "The 'range' field must be an IPv4 address on the LAN (e.g. its router, 192.168.178.1)." },
};

/** The seed sends "artifactId": 1 along with commands; any value is accepted, a different site tag is not. */
const ARTIFACT_ID_ECHO = { type: "any", optional: true };

/** A distributor row as stored: its identity, and its settings once configured. */
type DistributorColumns = SiteWorkerColumns & { identity: string } & { [Setting in keyof DistributorSettings]-?: DistributorSettings[Setting] | null };

/** Known-machines-only: the site's MACs, read from the machines service and pushed to its distributors. */
interface KnownMacsMethods {
	siteMacs(ctx: Context, artifactId: string): Promise<string[]>;
	schedulePush(artifactId: string): void;
	pushKnownMacs(artifactId: string): Promise<void>;
	pushToNewWorkers(): Promise<void>;
}

interface KnownMacsVars extends EntityVars<DistributorColumns> {
	pushTimers?: Map<string, NodeJS.Timeout>;
	/** Worker nodes whose known MACs are current (a node that reconnects is a new node ID, and gets them again). */
	pushedNodes?: Set<string>;
	syncing?: Promise<void>;
}

type DistributorMethods = SiteWorkersMethods<DistributorColumns> & EntityMethods<DistributorColumns> & KnownMacsMethods;

/**
 * /api/distributors: one row per distributor worker (its site tag and persisted identity; a
 * restarted worker keeps its row). Rows appear when a worker connects and show online:false
 * and lastSeen when it is gone. PUT /:id and PUT /:id/status are carried out by that row's own
 * worker node, never by another; `siteNode` names the node that holds a site.
 */
export const DistributorsService: ServiceSchema = defineService<DistributorMethods, KnownMacsVars>({
	name: "distributors",
	mixins: [
		siteWorkersMixin<WorkerStatus, DistributorColumns>({
			workerService: WORKER_SERVICE,
			keyColumn: "identity",
			stateEvent: STATE_EVENT,
			noun: "distributor",
			statusColumns: (status) => ({ ...stateColumns(status), ...(status.settings ?? {}) }),
		}),
		entityMixin({
			name: "distributors",
			fields: {
				artifactId: { type: DataTypes.STRING(253), allowNull: false },
				identity: { type: DataTypes.STRING(64), allowNull: false, unique: true },
				...SITE_WORKER_FIELDS,
				device: { type: DataTypes.STRING(15), allowNull: true },
				range: { type: DataTypes.STRING(15), allowNull: true },
				ipxePxeUefiUrl: { type: DataTypes.STRING(1024), allowNull: true },
				ipxePxeBiosUrl: { type: DataTypes.STRING(1024), allowNull: true },
				ipxePxeUefiIa32Url: { type: DataTypes.STRING(1024), allowNull: true },
				ipxePxeUefiArm64Url: { type: DataTypes.STRING(1024), allowNull: true },
				scriptUrl: { type: DataTypes.STRING(1024), allowNull: true },
				knownMachinesOnly: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
			},
			// Rows are made by workers connecting, not by clients.
			params: {},
		}),
	],
	actions: {
		create: false,
		update: {
			rest: "PUT /:id",
			params: {
				id: ID_PARAM,
				ipxePxeUefiUrl: URL_RULE("ipxePxeUefiUrl"),
				ipxePxeBiosUrl: URL_RULE("ipxePxeBiosUrl"),
				// Optional: iPXE for 32-bit x86 UEFI and 64-bit ARM UEFI clients (PXE and HTTP boot).
				ipxePxeUefiIa32Url: URL_RULE("ipxePxeUefiIa32Url", true),
				ipxePxeUefiArm64Url: URL_RULE("ipxePxeUefiArm64Url", true),
				device: { type: "string", pattern: DEVICE_PATTERN, messages: { stringPattern: "The 'device' field must be a network interface name (letters, digits, '_', '.', '-'; at most 15)." } },
				range: IPV4_RULE,
				scriptUrl: URL_RULE("scriptUrl", true),
				// Optional, off by default: the seed's bodies leave it out and answer everyone.
				knownMachinesOnly: { ...BOOLEAN_PARAM, optional: true, default: false },
				artifactId: ARTIFACT_ID_ECHO,
				$$strict: true,
			},
			async handler(ctx: Context<DistributorSettings & { id: number; artifactId?: unknown }>) {
				const settings: Required<DistributorSettings> = {
					ipxePxeUefiUrl: ctx.params.ipxePxeUefiUrl,
					ipxePxeBiosUrl: ctx.params.ipxePxeBiosUrl,
					ipxePxeUefiIa32Url: ctx.params.ipxePxeUefiIa32Url ?? null,
					ipxePxeUefiArm64Url: ctx.params.ipxePxeUefiArm64Url ?? null,
					device: ctx.params.device,
					range: ctx.params.range,
					scriptUrl: ctx.params.scriptUrl ?? null,
					knownMachinesOnly: ctx.params.knownMachinesOnly ?? false,
				};
				const target = await this.commandable(ctx.params.id, ctx.params.artifactId);
				// The list goes with the configuration, so the mode never starts with an empty list.
				const knownMacs = settings.knownMachinesOnly ? await this.siteMacs(ctx, target.artifactId) : [];
				const { row, answer } = await this.commandRow<WorkerStatus>(ctx, ctx.params, "configure", { ...settings, knownMacs }, { timeout: CONFIGURE_TIMEOUT_MS });
				this.pushedNodes?.add(row.nodeID);
				return this.record(ctx, row.id, { ...settings, ...stateColumns(answer) });
			},
		},
		setStatus: {
			rest: "PUT /:id/status",
			params: { id: ID_PARAM, on: BOOLEAN_PARAM, artifactId: ARTIFACT_ID_ECHO, $$strict: true },
			async handler(ctx: Context<{ id: number; on: boolean; artifactId?: unknown }>) {
				const { row, answer } = await this.commandRow<WorkerStatus>(ctx, ctx.params, "setStatus", { on: ctx.params.on }, { timeout: STATUS_TIMEOUT_MS });
				return this.record(ctx, row.id, stateColumns(answer));
			},
		},
		/** The node of an online distributor for a site (localnodes runs scripts through it). */
		siteNode: {
			visibility: "public",
			params: { artifactId: ARTIFACT_ID_PARAM },
			handler(ctx: Context<{ artifactId: string }>): Promise<{ id: number; nodeID: string }> {
				return this.siteNode(ctx.params.artifactId);
			},
		},
		/**
		 * A BMC call (power on|off|cycle|status, bootdev) carried out by the site's own distributor,
		 * which is on the BMC's network; for cluster services (machines), not over REST.
		 */
		bmc: routedToSite("bmc", BMC_PARAMS, { timeout: BMC_ROUTE_TIMEOUT_MS }),
	},
	events: {
		/** The machines service says a site's machines changed: its known-machines-only distributors get the new list. */
		"machines.changed"(ctx: Context<{ artifactId?: unknown }>) {
			if (typeof ctx.params.artifactId === "string" && ctx.params.artifactId) this.schedulePush(ctx.params.artifactId);
		},
		/** A distributor that (re)connects may have missed changes while it was away. */
		"$services.changed"() {
			void this.pushToNewWorkers();
		},
	},
	methods: {
		async siteMacs(ctx: Context, artifactId: string): Promise<string[]> {
			try {
				return await ctx.call<string[], object>("machines.siteMacs", { artifactId }, { timeout: KNOWN_MACS_TIMEOUT_MS });
			} catch (err) {
				if (err instanceof Errors.ServiceNotFoundError || err instanceof Errors.ServiceNotAvailableError) {
					throw new UnavailableError("knownMachinesOnly needs the machines service (the site's MACs come from /api/machines), which is not running", { artifactId });
				}
				throw err;
			}
		},
		schedulePush(artifactId: string): void {
			this.pushTimers ??= new Map();
			clearTimeout(this.pushTimers.get(artifactId));
			this.pushTimers.set(
				artifactId,
				setTimeout(() => {
					this.pushTimers!.delete(artifactId);
					this.pushKnownMacs(artifactId).catch((err: Error) => this.logger.warn(`known MACs of site "${artifactId}" not pushed: ${err.message}`));
				}, KNOWN_MACS_DEBOUNCE_MS),
			);
		},
		async pushKnownMacs(artifactId: string): Promise<void> {
			const rows = (await this.adapter.find({ query: { artifactId, online: true, knownMachinesOnly: true } as Partial<DistributorColumns> })).map((r) => r.get({ plain: true }) as DistributorColumns);
			const live = rows.filter((row) => this.isWorkerNode(row.nodeID));
			if (live.length === 0) return;
			const macs = await this.broker.call<string[], object>("machines.siteMacs", { artifactId }, { timeout: KNOWN_MACS_TIMEOUT_MS });
			for (const row of live) {
				await this.broker.call(`${WORKER_SERVICE}.setKnownMacs`, { macs }, { nodeID: row.nodeID, timeout: CONFIGURE_TIMEOUT_MS });
				this.pushedNodes?.add(row.nodeID);
			}
		},
		async pushToNewWorkers(): Promise<void> {
			this.pushedNodes ??= new Set();
			// The mixin's sync (rows, the status a reconnected worker reports) goes first.
			await this.syncing;
			const connected = this.connectedWorkers();
			for (const nodeID of this.pushedNodes) if (!connected.some((w) => w.nodeID === nodeID)) this.pushedNodes.delete(nodeID);
			const sites = new Set(connected.filter((w) => !this.pushedNodes!.has(w.nodeID)).map((w) => w.artifactId));
			for (const worker of connected) this.pushedNodes.add(worker.nodeID);
			for (const artifactId of sites) this.schedulePush(artifactId);
		},
	},
	stopped() {
		for (const timer of this.pushTimers?.values() ?? []) clearTimeout(timer);
	},
});
