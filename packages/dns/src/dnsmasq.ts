export interface DnsSettings {
	/** The site's LAN interface: dnsmasq answers there (and on loopback) only, never on every interface. */
	device: string;
	/** The site's local domain: names in it are answered here only (NXDOMAIN when unknown). */
	domain: string;
	/** Where other names are forwarded. None: only the local names resolve. */
	upstreams: string[];
	port: number;
}

export const DEFAULT_DNS_PORT = 53;
/** The dnsmasq log line that comes after its DNS sockets are bound. */
export const DNS_READY_LINE = /started, version/;

/**
 * dnsmasq as a DNS server only (a separate instance from the distributor's proxy DHCP/TFTP one):
 * no DHCP, no /etc/resolv.conf or /etc/hosts of the machine, only the given upstreams and the
 * site's hosts file, bound to the LAN interface's addresses only (an open resolver on every
 * interface, the uplink included, would answer anyone). Queries are logged (to the supervisor's
 * bounded log) for GET …/log.
 */
export function renderDnsConfig(settings: DnsSettings, hostsFile: string): string {
	const lines = [
		"# Written by the clusterplatform dns worker on every change; edits are lost.",
		`port=${settings.port}`,
		// dnsmasq adds loopback itself; bind-interfaces binds those addresses, not the wildcard.
		`interface=${settings.device}`,
		"bind-interfaces",
		"no-resolv",
		"no-hosts",
		"user=root",
		"pid-file=",
		"log-queries",
		`domain=${settings.domain}`,
		`local=/${settings.domain}/`,
		"expand-hosts",
		`addn-hosts=${hostsFile}`,
		...settings.upstreams.map((upstream) => `server=${upstream}`),
	];
	return `${lines.join("\n")}\n`;
}
