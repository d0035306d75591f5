import type { BootEvent, BootEventKind } from "@clusterplatform/core";

export interface HostSummary {
	/** The host's IP when known, else its MAC. */
	host: string;
	ip: string | null;
	macs: string[];
	/** Sites (distributors) that saw it. */
	sites: string[];
	firstSeen: string;
	lastSeen: string;
	/** Kinds of step seen, in the order the host first reached them (dhcp, tftp, script, …). */
	steps: BootEventKind[];
	last: { kind: BootEventKind; detail: string; at: string };
	count: number;
}

const MAX_HOSTS = 200;

/**
 * Groups events (newest first) by host. HTTP and TFTP steps carry the IP; proxy-DHCP answers the
 * MAC, and the IP too once the host asks the PXE service on port 4011 — those link a MAC to its IP.
 */
export function hostsOf(newestFirst: BootEvent[]): HostSummary[] {
	const ipOfMac = new Map<string, string>();
	for (const event of newestFirst) if (event.mac && event.ip && !ipOfMac.has(event.mac)) ipOfMac.set(event.mac, event.ip);
	const hosts = new Map<string, HostSummary>();
	for (const event of [...newestFirst].reverse()) {
		const ip = event.ip ?? (event.mac ? ipOfMac.get(event.mac) ?? null : null);
		const key = ip ?? event.mac;
		if (!key) continue;
		let host = hosts.get(key);
		if (!host) {
			host = { host: key, ip, macs: [], sites: [], firstSeen: event.at, lastSeen: event.at, steps: [], last: { kind: event.kind, detail: event.detail, at: event.at }, count: 0 };
			hosts.set(key, host);
		}
		if (event.mac && !host.macs.includes(event.mac)) host.macs.push(event.mac);
		if (event.artifactId && !host.sites.includes(event.artifactId)) host.sites.push(event.artifactId);
		if (!host.steps.includes(event.kind)) host.steps.push(event.kind);
		host.lastSeen = event.at;
		host.last = { kind: event.kind, detail: event.detail, at: event.at };
		host.count++;
	}
	return [...hosts.values()].sort((a, b) => b.lastSeen.localeCompare(a.lastSeen)).slice(0, MAX_HOSTS);
}
