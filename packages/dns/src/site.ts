import fsp from "node:fs/promises";
import { ConflictError, SiteWorkerState, checkDeviceExists, checkDeviceName, invalid, requireBinary, run, type DnsmasqStatus, type SiteWorkerEnvironment } from "@clusterplatform/core";
import { DNS_READY_LINE, renderDnsConfig, type DnsSettings } from "./dnsmasq";
import { parseHosts, renderHosts } from "./hosts";

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
 * What only the site DNS does: a DNS-only dnsmasq (dnsmasq.ts) with the site's hosts file, inside
 * the network namespace CLUSTERPLATFORM_DNS_NETNS names if set (`ip netns exec`). One per site:
 * its row is keyed by the site tag.
 */
export class DnsSite extends SiteWorkerState<SavedState, DnsWorkerStatus> {
	private readonly netns: string | null;
	private readonly confFile = this.file("dnsmasq.conf");
	private readonly hostsFile = this.file("hosts");

	constructor(env: SiteWorkerEnvironment) {
		const netns = env.config.dnsNetns;
		super(env, { settings: null, hosts: "", on: false }, { readyLine: DNS_READY_LINE, prefix: netns ? ["ip", "netns", "exec", netns] : undefined });
		this.netns = netns;
	}

	status(): DnsWorkerStatus {
		return { ...this.dnsmasq.status(), artifactId: this.artifactId, settings: this.saved.settings, hosts: this.saved.hosts };
	}

	recentLog(lines: number): string[] {
		return this.dnsmasq.recentLog().slice(-lines);
	}

	/** The LAN interface must exist where dnsmasq runs: on this host, or in the network namespace it runs in. */
	async checkDevice(device: unknown): Promise<string> {
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
	}

	/** Write state, hosts and config files, then restart dnsmasq if it serves. */
	async change(changes: Partial<Pick<SavedState, "settings" | "hosts">>): Promise<DnsWorkerStatus> {
		Object.assign(this.saved, changes);
		await this.writeFiles();
		if (this.serviceable() && (this.dnsmasq.running || this.saved.on)) await this.dnsmasq.restart(this.confFile);
		return this.status();
	}

	async setOn(on: boolean): Promise<DnsWorkerStatus> {
		if (on && !this.serviceable()) throw new ConflictError("this site's DNS is not configured yet: PUT /api/dnses/:id with device (the LAN interface), domain and upstreams first");
		this.saved.on = on;
		await this.writeFiles();
		if (on) await this.dnsmasq.restart(this.confFile);
		else await this.dnsmasq.stop();
		return this.status();
	}

	/** A restarted site serves again what it served before. */
	async resume(): Promise<void> {
		if (this.saved.on && this.serviceable()) await this.dnsmasq.start(this.confFile);
		else if (this.saved.on) this.env.logger.warn("dns-worker: not serving: its saved settings name no LAN interface; PUT /api/dnses/:id with device again");
	}

	/** Whether dnsmasq may start: settings saved before it was bound to an interface name none, and must be given again. */
	private serviceable(): boolean {
		return Boolean(this.saved.settings?.device);
	}

	private async writeFiles(): Promise<void> {
		await fsp.writeFile(this.hostsFile, renderHosts(parseHosts(this.saved.hosts)));
		if (this.saved.settings && this.serviceable()) await fsp.writeFile(this.confFile, renderDnsConfig(this.saved.settings, this.hostsFile));
		await this.save();
	}
}
