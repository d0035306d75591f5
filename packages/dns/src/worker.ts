import type { Context, ServiceSchema } from "moleculer";
import { PORT_PARAM, defineService, siteWorkerMixin, type SiteWorkerVars } from "@clusterplatform/core";
import type { DnsSettings } from "./dnsmasq";
import { HOSTS_MAX_BYTES, checkDomain, checkUpstreams, parseHosts } from "./hosts";
import { DnsSite, type DnsWorkerStatus } from "./site";

/** The worker's service name; one per site, next to the distributor worker. Commands name its node. */
export const DNS_WORKER_SERVICE = "dns-worker";
/** Event a worker emits when its dnsmasq starts, stops or crashes. */
export const DNS_STATE_EVENT = "dns.state";
export const LOG_LINES_MAX = 1000;

/**
 * The site side of the local DNS: runs where the distributor runs (same site tag,
 * CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID) and supervises its own DNS-only dnsmasq (site.ts).
 * Called by the "dnses" manager by nodeID only. `status` and `setStatus` come with
 * siteWorkerMixin (core/site-worker.ts).
 */
export const DnsWorkerService: ServiceSchema = defineService<object, SiteWorkerVars<DnsSite>>({
	name: DNS_WORKER_SERVICE,
	mixins: [siteWorkerMixin({ stateEvent: DNS_STATE_EVENT, dirName: "dns", create: (env) => new DnsSite(env) })],
	actions: {
		configure: {
			params: { device: "string", domain: "string", upstreams: { type: "array", items: "string", max: 8 }, port: PORT_PARAM },
			async handler(ctx: Context<DnsSettings>): Promise<DnsWorkerStatus> {
				const settings: DnsSettings = { device: await this.site.checkDevice(ctx.params.device), domain: checkDomain(ctx.params.domain), upstreams: checkUpstreams(ctx.params.upstreams), port: ctx.params.port };
				return this.site.serially(() => this.site.change({ settings }));
			},
		},
		setHosts: {
			params: { hosts: { type: "string", max: HOSTS_MAX_BYTES } },
			handler(ctx: Context<{ hosts: string }>): Promise<DnsWorkerStatus> {
				parseHosts(ctx.params.hosts);
				return this.site.serially(() => this.site.change({ hosts: ctx.params.hosts }));
			},
		},
		log: {
			params: { lines: { type: "number", integer: true, min: 1, max: LOG_LINES_MAX } },
			handler(ctx: Context<{ lines: number }>): string[] {
				return this.site.recentLog(ctx.params.lines);
			},
		},
	},
});
