import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { ConfigError, ConflictError, PORT_PARAM, configOf, invalid, requireBinary, run } from "@clusterplatform/core";
import { DnsmasqSupervisor, checkDeviceExists, checkDeviceName, type DnsmasqStatus } from "@clusterplatform/distributor";
import { DNS_READY_LINE, renderDnsConfig, type DnsSettings } from "./dnsmasq";
import { HOSTS_MAX_BYTES, checkDomain, checkUpstreams, parseHosts, renderHosts } from "./hosts";

/** The worker's service name; one per site, next to the distributor worker. Commands name its node. */
export const DNS_WORKER_SERVICE = "dns-worker";
/** Event a worker emits when its dnsmasq starts, stops or crashes. */
export const DNS_STATE_EVENT = "dns.state";
export const LOG_LINES_MAX = 1000;

interface SavedState {
	settings: DnsSettings | null;
	hosts: string;
	on: boolean;
}

export interface DnsWorkerStatus extends DnsmasqStatus {
	artifactId: string;
	settings: DnsSettings | null;
	hosts: string;
}

/**
 * The site side of the local DNS: runs where the distributor runs (same site tag,
 * CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID) and supervises its own DNS-only dnsmasq with the
 * distributor's DnsmasqSupervisor. CLUSTERPLATFORM_DNS_NETNS, if set, runs that dnsmasq inside
 * the named network namespace (`ip netns exec`). Called by the "dnses" manager by nodeID only.
 */
export const DnsWorkerService: ServiceSchema = {
	name: DNS_WORKER_SERVICE,
	actions: {
		configure: {
			params: { device: "string", domain: "string", upstreams: { type: "array", items: "string", max: 8 }, port: PORT_PARAM },
			async handler(this: any, ctx: Context<DnsSettings>): Promise<DnsWorkerStatus> {
				const settings: DnsSettings = { device: await this.checkDevice(ctx.params.device), domain: checkDomain(ctx.params.domain), upstreams: checkUpstreams(ctx.params.upstreams), port: ctx.params.port };
				return this.serially(() => this.change({ settings }));
			},
		},
		setHosts: {
			params: { hosts: { type: "string", max: HOSTS_MAX_BYTES } },
			handler(this: any, ctx: Context<{ hosts: string }>): Promise<DnsWorkerStatus> {
				parseHosts(ctx.params.hosts);
				return this.serially(() => this.change({ hosts: ctx.params.hosts }));
			},
		},
		setStatus: {
			params: { on: "boolean" },
			handler(this: any, ctx: Context<{ on: boolean }>): Promise<DnsWorkerStatus> {
				return this.serially(() => this.setOn(ctx.params.on));
			},
		},
		status: {
			handler(this: any): DnsWorkerStatus {
				return this.currentStatus();
			},
		},
		log: {
			params: { lines: { type: "number", integer: true, min: 1, max: LOG_LINES_MAX } },
			handler(this: any, ctx: Context<{ lines: number }>): string[] {
				return this.dnsmasq.recentLog().slice(-ctx.params.lines);
			},
		},
	},
	methods: {
		/** One command at a time: a restart must not interleave with a config write. */
		serially<T>(this: any, command: () => Promise<T>): Promise<T> {
			const result = (this.commands ?? Promise.resolve()).then(command);
			this.commands = result.catch(() => undefined);
			return result;
		},
		/** The LAN interface must exist where dnsmasq runs: on this host, or in the network namespace it runs in. */
		async checkDevice(this: any, device: unknown): Promise<string> {
			const name = checkDeviceName(device);
			if (!this.netns) {
				checkDeviceExists(name);
				return name;
			}
			try {
				await run(requireBinary("ip", "iproute2"), ["-n", this.netns, "link", "show", "dev", name], { timeout: 10_000 });
			} catch {
				invalid("device", `no interface "${name}" in network namespace ${this.netns}`);
			}
			return name;
		},
		/** Whether dnsmasq may start: settings saved before it was bound to an interface name none, and must be given again. */
		serviceable(this: any): boolean {
			return Boolean(this.saved.settings?.device);
		},
		currentStatus(this: any): DnsWorkerStatus {
			return { ...this.dnsmasq.status(), artifactId: this.artifactId, settings: this.saved.settings, hosts: this.saved.hosts };
		},
		/** Write state, hosts and config files, then restart dnsmasq if it serves. */
		async change(this: any, changes: Partial<SavedState>): Promise<DnsWorkerStatus> {
			Object.assign(this.saved, changes);
			await this.writeFiles();
			if (this.serviceable() && (this.dnsmasq.running || this.saved.on)) await this.dnsmasq.restart(this.confFile);
			return this.currentStatus();
		},
		async writeFiles(this: any): Promise<void> {
			await fsp.writeFile(this.hostsFile, renderHosts(parseHosts(this.saved.hosts)));
			if (this.serviceable()) await fsp.writeFile(this.confFile, renderDnsConfig(this.saved.settings, this.hostsFile));
			await fsp.writeFile(path.join(this.dir, "state.json"), JSON.stringify(this.saved, null, "\t"));
		},
		async setOn(this: any, on: boolean): Promise<DnsWorkerStatus> {
			if (on && !this.serviceable()) throw new ConflictError("this site's DNS is not configured yet: PUT /api/dnses/:id with device (the LAN interface), domain and upstreams first");
			this.saved.on = on;
			await this.writeFiles();
			if (on) await this.dnsmasq.restart(this.confFile);
			else await this.dnsmasq.stop();
			return this.currentStatus();
		},
	},
	created(this: any) {
		const config = configOf(this.broker);
		if (!config.distributorArtifactId) throw new ConfigError("the dns worker needs CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID (its site tag)");
		this.artifactId = config.distributorArtifactId;
		this.dir = path.join(config.dataDir, "dns");
		fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
		this.confFile = path.join(this.dir, "dnsmasq.conf");
		this.hostsFile = path.join(this.dir, "hosts");
		const stateFile = path.join(this.dir, "state.json");
		this.saved = (fs.existsSync(stateFile) ? JSON.parse(fs.readFileSync(stateFile, "utf8")) : { settings: null, hosts: "", on: false }) as SavedState;
		Object.assign(this.metadata, { artifactId: this.artifactId });
		const netns = config.dnsNetns;
		this.netns = netns;
		this.dnsmasq = new DnsmasqSupervisor(requireBinary("dnsmasq", "dnsmasq-base"), { readyLine: DNS_READY_LINE, prefix: netns ? ["ip", "netns", "exec", netns] : undefined });
		this.dnsmasq.on("state", (status: DnsmasqStatus) => {
			this.broker.broadcast(DNS_STATE_EVENT, { ...status, artifactId: this.artifactId }).catch(() => undefined);
		});
	},
	async started(this: any) {
		// A restarted site serves again what it served before.
		if (this.saved.on && this.serviceable()) await this.dnsmasq.start(this.confFile);
		else if (this.saved.on) this.logger.warn("dns-worker: not serving: its saved settings name no LAN interface; PUT /api/dnses/:id with device again");
	},
	async stopped(this: any) {
		this.dnsmasq.removeAllListeners("state");
		await this.dnsmasq.stop();
	},
};
