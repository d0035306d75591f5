import type { Context, ServiceSchema } from "moleculer";
import { ARTIFACT_ID_PARAM, BOOLEAN_PARAM, DataTypes, ID_PARAM, IPV4_PATTERN, UnavailableError, entityMixin, invalid, mayActForSite, SITE_WORKER_FIELDS, siteWorkersMixin, type SiteWorkerRow } from "@clusterplatform/core";
import { STATE_EVENT, WORKER_SERVICE, type DistributorSettings, type WorkerStatus } from "./worker";
import { DEVICE_PATTERN, checkUrl } from "./validation";

/** How often the manager re-reads which workers are connected (and stamps lastSeen). */
/** Downloading the iPXE binaries (two to four) and restarting dnsmasq on the worker. */
const CONFIGURE_TIMEOUT_MS = 180_000;
const STATUS_TIMEOUT_MS = 30_000;

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
}

const IPV4_RULE = {
	type: "string",
	pattern: IPV4_PATTERN,
	messages: { stringPattern: "The 'range' field must be an IPv4 address on the LAN (e.g. its router, 192.168.178.1)." },
};

/** The seed sends "artifactId": 1 along with commands; any value is accepted, a different site tag is not. */
const ARTIFACT_ID_ECHO = { type: "any", optional: true };

function stateColumns(status: WorkerStatus) {
	return { on: status.on, state: status.state, stateReason: status.reason };
}

/**
 * /api/distributors: one row per distributor worker (its site tag and persisted identity; a
 * restarted worker keeps its row). Rows appear when a worker connects and show online:false
 * and lastSeen when it is gone. PUT /:id and PUT /:id/status are carried out by that row's own
 * worker node, never by another.
 */
export const DistributorsService: ServiceSchema = {
	name: "distributors",
	mixins: [
		siteWorkersMixin<WorkerStatus>({
			workerService: WORKER_SERVICE,
			keyColumn: "identity",
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
				artifactId: ARTIFACT_ID_ECHO,
				$$strict: true,
			},
			async handler(this: any, ctx: Context<DistributorSettings & { id: number; artifactId?: unknown }>) {
				const row = await this.commandable(ctx.params.id, ctx.params.artifactId);
				const settings: DistributorSettings = {
					ipxePxeUefiUrl: ctx.params.ipxePxeUefiUrl,
					ipxePxeBiosUrl: ctx.params.ipxePxeBiosUrl,
					ipxePxeUefiIa32Url: ctx.params.ipxePxeUefiIa32Url ?? null,
					ipxePxeUefiArm64Url: ctx.params.ipxePxeUefiArm64Url ?? null,
					device: ctx.params.device,
					range: ctx.params.range,
					scriptUrl: ctx.params.scriptUrl ?? null,
				};
				const status: WorkerStatus = await ctx.call(`${WORKER_SERVICE}.configure`, settings, { nodeID: row.nodeID, timeout: CONFIGURE_TIMEOUT_MS });
				return this.record(ctx, row.id, { ...settings, ...stateColumns(status) });
			},
		},
		setStatus: {
			rest: "PUT /:id/status",
			params: { id: ID_PARAM, on: BOOLEAN_PARAM, artifactId: ARTIFACT_ID_ECHO, $$strict: true },
			async handler(this: any, ctx: Context<{ id: number; on: boolean; artifactId?: unknown }>) {
				const row = await this.commandable(ctx.params.id, ctx.params.artifactId);
				const status: WorkerStatus = await ctx.call(`${WORKER_SERVICE}.setStatus`, { on: ctx.params.on }, { nodeID: row.nodeID, timeout: STATUS_TIMEOUT_MS });
				return this.record(ctx, row.id, stateColumns(status));
			},
		},
		/** The node of an online distributor for a site (localnodes runs scripts through it). */
		siteNode: {
			visibility: "public",
			params: { artifactId: ARTIFACT_ID_PARAM },
			async handler(this: any, ctx: Context<{ artifactId: string }>): Promise<{ id: number; nodeID: string }> {
				const rows = await this.adapter.find({ query: { artifactId: ctx.params.artifactId, online: true }, sort: ["-lastSeen"] });
				const live = rows.map((r: any) => r.get({ plain: true })).find((r: any) => this.isWorkerNode(r.nodeID));
				if (!live) throw new UnavailableError(`no distributor for site "${ctx.params.artifactId}" is online`, { artifactId: ctx.params.artifactId });
				return { id: live.id, nodeID: live.nodeID };
			},
		},
	},
	events: {
		[STATE_EVENT]: {
			async handler(this: any, ctx: Context<WorkerStatus>) {
				const row = await this.adapter.findOne({ where: { identity: ctx.params.identity } });
				// Only a node of the row's own site reports its state (core/bus.ts).
				if (row && mayActForSite(this.broker, ctx.nodeID!, row.artifactId)) await this.record(ctx, row.id, stateColumns(ctx.params));
			},
		},
	},
	methods: {
		/** The row, if its worker is connected now; 503 otherwise (a command is never sent elsewhere). */
		async commandable(this: any, id: number, artifactId: unknown) {
			const row = (await this.findOrFail(id)).get({ plain: true });
			if (typeof artifactId === "string" && artifactId !== row.artifactId) invalid("artifactId", `distributor ${id} belongs to site "${row.artifactId}", not "${artifactId}"`);
			if (!this.isWorkerNode(row.nodeID)) throw new UnavailableError(`distributor ${id} (${row.artifactId}) is offline${row.lastSeen ? `, last seen ${new Date(row.lastSeen).toISOString()}` : ""}`, { id });
			return row;
		},
	},
};
