import dns from "node:dns/promises";
import type { LookupFunction } from "node:net";
import net from "node:net";

/**
 * Addresses a URL a user gives may not point at (SSRF): loopback, private, link-local (cloud
 * metadata at 169.254.169.254), carrier-grade NAT, multicast, documentation and reserved ranges.
 * IPv4 and IPv6 are kept in separate lists: Node's BlockList matches IPv4 addresses against IPv6
 * rules covering ::ffff:0:0/96, so one list refusing that range would refuse every IPv4 address.
 */
function blockList(family: "ipv4" | "ipv6", subnets: readonly (readonly [string, number])[]): net.BlockList {
	const list = new net.BlockList();
	for (const [network, prefix] of subnets) list.addSubnet(network, prefix, family);
	return list;
}

const NON_PUBLIC_IPV4 = blockList("ipv4", [
	["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
	["192.0.0.0", 24], ["192.0.2.0", 24], ["192.88.99.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24],
	["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
]);

const NON_PUBLIC_IPV6 = blockList("ipv6", [
	// Unspecified, loopback, unique-local, link-local, site-local, multicast, discard, documentation (old and new), SRv6 SIDs.
	["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["fec0::", 10], ["ff00::", 8], ["100::", 64], ["2001:db8::", 32], ["3fff::", 20], ["5f00::", 16],
	// Ranges that carry an IPv4 address, private ones included: IPv4-compatible (::a.b.c.d), IPv4-mapped
	// (::ffff:a.b.c.d, any spelling), IPv4-translated (::ffff:0:a.b.c.d), NAT64 (well-known and local-use)
	// and 6to4 (2002:aabb:ccdd::).
	["::", 96], ["::ffff:0:0", 96], ["::ffff:0:0:0", 96], ["64:ff9b::", 96], ["64:ff9b:1::", 48], ["2002::", 16],
	// IETF protocol assignments: Teredo (2001::/32, carries an IPv4 address), benchmarking, ORCHID and the like.
	["2001::", 23],
]);

export function isPublicAddress(address: string): boolean {
	const family = net.isIP(address);
	if (family === 4) return !NON_PUBLIC_IPV4.check(address, "ipv4");
	if (family === 6) return !NON_PUBLIC_IPV6.check(address, "ipv6");
	return false;
}

/** A URL's host without IPv6 brackets. */
export function hostOfUrl(url: URL): string {
	return url.hostname.replace(/^\[|\]$/g, "");
}

/**
 * Why a host may not be contacted, judged without DNS (e.g. at POST time), or null. `allowed`
 * names hosts or addresses an operator opened explicitly (a lab mirror on the LAN, a test server).
 */
export function hostProblem(host: string, allowed: readonly string[] = []): string | null {
	if (allowed.includes(host.toLowerCase())) return null;
	if (host === "localhost" || host.endsWith(".localhost")) return "must not point at this machine (localhost)";
	if (net.isIP(host) && !isPublicAddress(host)) return `must not point at a loopback, private or link-local address (${host})`;
	return null;
}

export interface CheckedAddress {
	address: string;
	family: number;
}

/**
 * Resolve a host and check every address it has (a name allowed by the operator, or resolving only
 * to allowed addresses, may be non-public). Connect to the returned address, not the name again,
 * so DNS cannot change between check and connect. Throws an Error with a plain reason.
 */
export async function resolveCheckedHost(host: string, allowed: readonly string[] = []): Promise<CheckedAddress> {
	const problem = hostProblem(host, allowed);
	if (problem) throw new Error(`${host}: ${problem}`);
	const addresses = net.isIP(host) ? [{ address: host, family: net.isIP(host) }] : await dns.lookup(host, { all: true });
	if (addresses.length === 0) throw new Error(`${host} does not resolve`);
	if (!allowed.includes(host.toLowerCase())) {
		const refused = addresses.find((a) => !isPublicAddress(a.address) && !allowed.includes(a.address));
		if (refused) throw new Error(`${host} resolves to ${refused.address}, a loopback, private or link-local address; refused`);
	}
	return addresses[0]!;
}

/** A `lookup` for http(s) requests and agents that always answers the checked address. */
export function pinnedLookup(pinned: CheckedAddress): LookupFunction {
	return ((_host: string, opts: { all?: boolean }, callback: (...args: unknown[]) => void) => {
		if (opts?.all) callback(null, [pinned]);
		else callback(null, pinned.address, pinned.family);
	}) as unknown as LookupFunction;
}
