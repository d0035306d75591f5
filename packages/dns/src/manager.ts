import type { Context, ServiceSchema } from "moleculer";
import {
	BOOLEAN_PARAM,
	DEVICE_PATTERN,
	DataTypes,
	ID_PARAM,
	PORT_PARAM,
	SITE_WORKER_FIELDS,
	defineService,
	entityMixin,
	siteWorkersMixin,
	stateColumns,
	type EntityMethods,
	type SiteWorkerColumns,
	type SiteWorkersMethods,
} from "@clusterplatform/core";
import { DEFAULT_DNS_PORT, type DnsSettings } from "./dnsmasq";
import { HOSTS_MAX_BYTES, checkDomain, checkUpstreams, parseHosts } from "./hosts";
import type { DnsWorkerStatus } from "./site";
import { DNS_STATE_EVENT, DNS_WORKER_SERVICE, LOG_LINES_MAX } from "./worker";

const COMMAND_TIMEOUT_MS = 30_000;

/** A site DNS row as stored: its settings and hosts once configured. */
type DnsColumns = SiteWorkerColumns & { [Setting in keyof DnsSettings]: DnsSettings[Setting] | null } & { hosts: string | null };

function columnsOf(status: DnsWorkerStatus): Partial<DnsColumns> {
	return { ...stateColumns(status), hosts: status.hosts, ...(status.settings ?? {}) };
}

type DnsesMethods = SiteWorkersMethods<DnsColumns> & EntityMethods<DnsColumns>;

/**
 * /api/dnses: one row per site (artifactId) whose dns worker has connected; online:false and
 * lastSeen once it is gone. Every command is carried out by that site's own worker node, after
 * the whole input has been validated here (a 422 changes nothing).
 */
export const DnsesService: ServiceSchema = defineService<DnsesMethods>({
	name: "dnses",
	mixins: [
		siteWorkersMixin<DnsWorkerStatus, DnsColumns>({ workerService: DNS_WORKER_SERVICE, keyColumn: "artifactId", stateEvent: DNS_STATE_EVENT, noun: "DNS", statusColumns: columnsOf }),
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
			async handler(ctx: Context<{ id: number; device: string; domain: string; upstreams: string[]; port?: number }>) {
				const settings: DnsSettings = { device: ctx.params.device, domain: checkDomain(ctx.params.domain), upstreams: checkUpstreams(ctx.params.upstreams), port: ctx.params.port ?? DEFAULT_DNS_PORT };
				const { row, answer } = await this.commandRow<DnsWorkerStatus>(ctx, ctx.params, "configure", settings, { timeout: COMMAND_TIMEOUT_MS });
				return this.record(ctx, row.id, columnsOf(answer));
			},
		},
		setHosts: {
			rest: "PUT /:id/hosts",
			params: { id: ID_PARAM, hosts: { type: "string", max: HOSTS_MAX_BYTES }, $$strict: true },
			async handler(ctx: Context<{ id: number; hosts: string }>) {
				parseHosts(ctx.params.hosts);
				const { row, answer } = await this.commandRow<DnsWorkerStatus>(ctx, ctx.params, "setHosts", { hosts: ctx.params.hosts }, { timeout: COMMAND_TIMEOUT_MS });
				return this.record(ctx, row.id, columnsOf(answer));
			},
		},
		setStatus: {
			rest: "PUT /:id/status",
			params: { id: ID_PARAM, on: BOOLEAN_PARAM, $$strict: true },
			async handler(ctx: Context<{ id: number; on: boolean }>) {
				const { row, answer } = await this.commandRow<DnsWorkerStatus>(ctx, ctx.params, "setStatus", { on: ctx.params.on }, { timeout: COMMAND_TIMEOUT_MS });
				return this.record(ctx, row.id, columnsOf(answer));
			},
		},
		log: {
			rest: "GET /:id/log",
			params: { id: ID_PARAM, lines: { type: "number", integer: true, min: 1, max: LOG_LINES_MAX, convert: true, default: 100 }, $$strict: true },
			async handler(ctx: Context<{ id: number; lines: number }>): Promise<{ lines: string[] }> {
				const { answer } = await this.commandRow<string[]>(ctx, ctx.params, "log", { lines: ctx.params.lines }, { timeout: COMMAND_TIMEOUT_MS });
				return { lines: answer };
			},
		},
	},
});
