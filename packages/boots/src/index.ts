import net from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import { BOOT_EVENTS, BOOT_EVENT_KINDS, DataTypes, Op, RateLimiter, defineService, entityMixin, invalid, siteOfNode, type BootEvent, type EntityMethods, type EntityRow, type EntityVars, type WhereOptions } from "@clusterplatform/core";
import { hostsOf, type HostSummary } from "./timeline";

export * from "./timeline";

/** Events kept: the oldest go once there are more (a boot is a few dozen events). */
const EVENTS_KEPT = 100_000;
/** Events the host views look through, newest first. */
const EVENTS_SCANNED = 5000;
/** The most events a batch from another process carries (the recorder's batch). */
const REMOTE_BATCH = 250;
const REMOTE_BATCHES_BURST = 200;
const REMOTE_BATCHES_PER_SECOND = 50;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function clean(event: Partial<BootEvent>): BootEvent | null {
	if (!BOOT_EVENT_KINDS.includes(event.kind as BootEvent["kind"])) return null;
	const at = new Date(event.at ?? "");
	const text = (value: unknown, max: number) => (typeof value === "string" && value ? value.slice(0, max) : null);
	return {
		at: Number.isNaN(at.getTime()) ? new Date().toISOString() : at.toISOString(),
		kind: event.kind!,
		ip: text(event.ip, 45),
		mac: text(event.mac, 17)?.toLowerCase() ?? null,
		artifactId: text(event.artifactId, 253),
		detail: text(event.detail, 500) ?? "",
	};
}

/** A stored event: `at` is a date in the table, an ISO string in answers. */
type BootEventColumns = Omit<BootEvent, "at"> & { at: Date | string };

interface BootsMethods extends EntityMethods<BootEventColumns> {
	newestEvents(where: WhereOptions): Promise<BootEvent[]>;
	prune(): Promise<void>;
}

/**
 * /api/boots: the boot timeline. Distributors report what hosts asked their dnsmasq for (proxy
 * DHCP answers, TFTP transfers) and the gateway the machine-path requests (scripts, kickstarts,
 * artifacts, a node registering); GET /api/boots/hosts shows each host's steps at a glance and
 * GET /api/boots/hosts/:host one host's timeline, by IP or MAC. Read-only; the newest
 * 100,000 events are kept.
 */
export const BootsService: ServiceSchema = defineService<BootsMethods, EntityVars<BootEventColumns> & { remoteBatches: RateLimiter }>({
	name: "boots",
	mixins: [
		entityMixin({
			name: "boots",
			fields: {
				at: { type: DataTypes.DATE, allowNull: false },
				kind: { type: DataTypes.STRING(16), allowNull: false },
				ip: { type: DataTypes.STRING(45), allowNull: true },
				mac: { type: DataTypes.STRING(17), allowNull: true },
				artifactId: { type: DataTypes.STRING(253), allowNull: true },
				detail: { type: DataTypes.STRING(500), allowNull: false },
			},
			params: {},
			// The host views look events up by ip and MAC, a site's by artifactId (the first two keep Sequelize's
			// generated names, boots_ip and boots_mac, so existing databases are not indexed twice); on PostgreSQL
			// the lists' substring search by ip and MAC has trigram indexes (see core/db.ts).
			modelOptions: {
				indexes: [
					{ fields: ["ip"] },
					{ fields: ["mac"] },
					{ name: "boots_site", fields: ["artifactId"] },
					{ name: "boots_ip_search", fields: ["ip"], using: "gin", operator: "gin_trgm_ops" },
					{ name: "boots_mac_search", fields: ["mac"], using: "gin", operator: "gin_trgm_ops" },
				],
			},
		}),
	],
	actions: {
		create: false,
		update: false,
		remove: false,
		hosts: {
			rest: "GET /hosts",
			params: { $$strict: true },
			async handler(): Promise<HostSummary[]> {
				return hostsOf(await this.newestEvents({}));
			},
		},
		host: {
			rest: "GET /hosts/:host",
			params: { host: { type: "string", max: 45 }, $$strict: true },
			async handler(ctx: Context<{ host: string }>) {
				const host = ctx.params.host.toLowerCase();
				if (!net.isIP(host) && !MAC.test(host)) invalid("host", "must be an IP address or a MAC address (aa:bb:cc:dd:ee:ff)");
				// The host's own events, then everything under the addresses and MACs they link it to.
				const own: BootEvent[] = await this.newestEvents(net.isIP(host) ? { ip: host } : { mac: host });
				const ips = [...new Set([...(net.isIP(host) ? [host] : []), ...own.map((e) => e.ip).filter((ip): ip is string => ip !== null)])];
				const macs = [...new Set([...(net.isIP(host) ? [] : [host]), ...own.map((e) => e.mac).filter((mac): mac is string => mac !== null)])];
				const events: BootEvent[] = await this.newestEvents({ [Op.or]: [...(ips.length ? [{ ip: { [Op.in]: ips } }] : []), ...(macs.length ? [{ mac: { [Op.in]: macs } }] : [])] });
				const summary = hostsOf(events).find((h) => h.host === host || h.ip === host || h.macs.includes(host));
				if (!summary) return { host, ip: net.isIP(host) ? host : null, macs: [], events: [] };
				return { ...summary, events: events.reverse() };
			},
		},
	},
	events: {
		[BOOT_EVENTS]: {
			async handler(ctx: Context<{ events?: Partial<BootEvent>[] }>) {
				// Other processes send a batch a second of at most 250 (BootEventRecorder): more is a flood,
				// dropped, so a bus credential cannot push the history out; a site's node writes only its own site.
				const remote = Boolean(ctx.nodeID) && ctx.nodeID !== this.broker.nodeID;
				if (remote && this.remoteBatches.take("any") > 0) return;
				const site = remote ? siteOfNode(ctx.nodeID!) : null;
				const sent = (Array.isArray(ctx.params.events) ? ctx.params.events : []).slice(0, remote ? REMOTE_BATCH : 10_000);
				const events = (site === null ? sent : sent.map((e) => ({ ...e, artifactId: site }))).map(clean).filter((e): e is BootEvent => e !== null);
				if (events.length === 0) return;
				await this.adapter.model.bulkCreate(events);
				await this.prune();
			},
		},
	},
	created() {
		// Batches from every other process together: a few dozen gateways and distributors, a batch a second each.
		this.remoteBatches = new RateLimiter(REMOTE_BATCHES_BURST, REMOTE_BATCHES_PER_SECOND);
	},
	methods: {
		async newestEvents(where: WhereOptions): Promise<BootEvent[]> {
			// raw: plain objects, not model instances (thousands of them per view).
			const rows = (await this.adapter.model.findAll({ where, order: [["id", "DESC"]], limit: EVENTS_SCANNED, attributes: ["at", "kind", "ip", "mac", "artifactId", "detail"], raw: true })) as unknown as BootEventColumns[];
			return rows.map((r) => ({ ...r, at: new Date(r.at).toISOString() }));
		},
		async prune() {
			const newest = await this.adapter.model.max<number | null, EntityRow<BootEventColumns>>("id");
			if (newest && newest > EVENTS_KEPT) await this.adapter.model.destroy({ where: { id: { [Op.lte]: newest - EVENTS_KEPT } } });
		},
	},
});

export default BootsService;
