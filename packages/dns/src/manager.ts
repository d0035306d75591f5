import type { Context, ServiceSchema } from "moleculer";
import { BOOLEAN_PARAM, DataTypes, ID_PARAM, PORT_PARAM, UnavailableError, entityMixin, SITE_WORKER_FIELDS, siteWorkersMixin, mayActForSite } from "@clusterplatform/core";
import { DEVICE_PATTERN } from "@clusterplatform/distributor";
import { DEFAULT_DNS_PORT, type DnsSettings } from "./dnsmasq";
import { HOSTS_MAX_BYTES, checkDomain, checkUpstreams, parseHosts } from "./hosts";
import { DNS_STATE_EVENT, DNS_WORKER_SERVICE, LOG_LINES_MAX, type DnsWorkerStatus } from "./worker";

/** How often the manager re-reads which workers are connected (and stamps lastSeen). */
const COMMAND_TIMEOUT_MS = 30_000;

function columnsOf(status: DnsWorkerStatus) {
	return { on: status.on, state: status.state, stateReason: status.reason, hosts: status.hosts, ...(status.settings ?? {}) };
}

/**
 * /api/dnses: one row per site (artifactId) whose dns worker has connected; online:false and
 * lastSeen once it is gone. Every command is carried out by that site's own worker node, after
 * the whole input has been validated here (a 422 changes nothing).
 */
export const DnsesService: ServiceSchema = {
	name: "dnses",
	mixins: [
		siteWorkersMixin<DnsWorkerStatus>({ workerService: DNS_WORKER_SERVICE, keyColumn: "artifactId", statusColumns: columnsOf }),
		entityMixin({
			name: "dnses",
			fields: {
				artifactId: { type: DataTypes.STRING(253), allowNull: false, unique: true },
				...SITE_WORKER_FIELDS,
				device: { type: DataTypes.STRING(15), allowNull: true },
				domain: { type: DataTypes.STRING(253), allowNull: true },
				upstreams: { type: DataTypes.JSON, allowNull: true },
				port: { type: DataTypes.INTEGER, allowNull: true },
				hosts: { type: DataTypes.TEXT, allowNull: true },
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
				device: { type: "string", pattern: DEVICE_PATTERN, messages: { stringPattern: "The 'device' field must be the site's LAN interface name (letters, digits, '_', '.', '-'; at most 15)." } },
				domain: { type: "string", max: 253 },
				upstreams: { type: "array", items: { type: "string", max: 64 }, max: 8 },
				port: { ...PORT_PARAM, optional: true, convert: true },
				$$strict: true,
			},
			async handler(this: any, ctx: Context<{ id: number; device: string; domain: string; upstreams: string[]; port?: number }>) {
				const settings: DnsSettings = { device: ctx.params.device, domain: checkDomain(ctx.params.domain), upstreams: checkUpstreams(ctx.params.upstreams), port: ctx.params.port ?? DEFAULT_DNS_PORT };
				const row = await this.commandable(ctx.params.id);
				const status: DnsWorkerStatus = await ctx.call(`${DNS_WORKER_SERVICE}.configure`, settings, { nodeID: row.nodeID, timeout: COMMAND_TIMEOUT_MS });
				return this.record(ctx, row.id, columnsOf(status));
			},
		},
		setHosts: {
			rest: "PUT /:id/hosts",
			params: { id: ID_PARAM, hosts: { type: "string", max: HOSTS_MAX_BYTES }, $$strict: true },
			async handler(this: any, ctx: Context<{ id: number; hosts: string }>) {
				parseHosts(ctx.params.hosts);
				const row = await this.commandable(ctx.params.id);
				const status: DnsWorkerStatus = await ctx.call(`${DNS_WORKER_SERVICE}.setHosts`, { hosts: ctx.params.hosts }, { nodeID: row.nodeID, timeout: COMMAND_TIMEOUT_MS });
				return this.record(ctx, row.id, columnsOf(status));
			},
		},
		setStatus: {
			rest: "PUT /:id/status",
			params: { id: ID_PARAM, on: BOOLEAN_PARAM, $$strict: true },
			async handler(this: any, ctx: Context<{ id: number; on: boolean }>) {
				const row = await this.commandable(ctx.params.id);
				const status: DnsWorkerStatus = await ctx.call(`${DNS_WORKER_SERVICE}.setStatus`, { on: ctx.params.on }, { nodeID: row.nodeID, timeout: COMMAND_TIMEOUT_MS });
				return this.record(ctx, row.id, columnsOf(status));
			},
		},
		log: {
			rest: "GET /:id/log",
			params: { id: ID_PARAM, lines: { type: "number", integer: true, min: 1, max: LOG_LINES_MAX, convert: true, default: 100 }, $$strict: true },
			async handler(this: any, ctx: Context<{ id: number; lines: number }>): Promise<{ lines: string[] }> {
				const row = await this.commandable(ctx.params.id);
				const lines: string[] = await ctx.call(`${DNS_WORKER_SERVICE}.log`, { lines: ctx.params.lines }, { nodeID: row.nodeID, timeout: COMMAND_TIMEOUT_MS });
				return { lines };
			},
		},
	},
	events: {
		[DNS_STATE_EVENT]: {
			async handler(this: any, ctx: Context<DnsWorkerStatus>) {
				const row = await this.adapter.findOne({ where: { artifactId: ctx.params.artifactId } });
				// Only a node of the row's own site reports its state (core/bus.ts).
				if (row && mayActForSite(this.broker, ctx.nodeID!, row.artifactId)) await this.record(ctx, row.id, { on: ctx.params.on, state: ctx.params.state, stateReason: ctx.params.reason });
			},
		},
	},
	methods: {
		/** The row, if its worker is connected now; 503 otherwise (a command is never sent elsewhere). */
		async commandable(this: any, id: number) {
			const row = (await this.findOrFail(id)).get({ plain: true });
			if (!this.isWorkerNode(row.nodeID)) {
				throw new UnavailableError(`the DNS of site ${row.artifactId} is offline${row.lastSeen ? `, last seen ${new Date(row.lastSeen).toISOString()}` : ""}`, { id });
			}
			return row;
		},
	},
};
