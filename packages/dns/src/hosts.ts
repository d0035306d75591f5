import net from "node:net";
import { InvalidInputError, invalid, isHostName } from "@clusterplatform/core";

/**
 * What a client may put into the site's DNS. Every value ends up in a dnsmasq config or hosts
 * file, so values are allow-listed, never escaped.
 */

export const HOSTS_MAX_BYTES = 256 * 1024;
const HOSTS_MAX_LINES = 10_000;

export { isHostName };

export interface HostEntry {
	address: string;
	names: string[];
}

/**
 * Parse /etc/hosts syntax: "<address> <name> [<name>…]", '#' comments, blank lines. Every bad
 * line is reported (line number and reason) in one 422, so nothing is written until all are right.
 */
export function parseHosts(text: string): HostEntry[] {
	const lines = text.split(/\r?\n/);
	if (lines.length > HOSTS_MAX_LINES) invalid("hosts", `at most ${HOSTS_MAX_LINES} lines`);
	const entries: HostEntry[] = [];
	const problems: { field: string; message: string; type: string; line: number }[] = [];
	lines.forEach((raw, i) => {
		const line = raw.replace(/#.*$/, "").trim();
		if (line === "") return;
		const reason = lineProblem(line);
		if (reason) problems.push({ field: "hosts", type: "hostsLine", line: i + 1, message: `line ${i + 1}: ${reason}` });
		else {
			const [address, ...names] = line.split(/[ \t]+/);
			entries.push({ address: address!, names });
		}
	});
	if (problems.length > 0) throw new InvalidInputError(problems.slice(0, 20));
	return entries;
}

function lineProblem(line: string): string | null {
	if (/[^\x20-\x7e\t]/.test(line)) return "contains control or non-ASCII characters";
	const [address, ...names] = line.split(/[ \t]+/);
	if (!net.isIP(address!)) return `"${address!.slice(0, 64)}" is not an IPv4 or IPv6 address`;
	if (names.length === 0) return `address ${address} has no host name after it`;
	const bad = names.find((name) => !isHostName(name));
	if (bad !== undefined) return `"${bad.slice(0, 64)}" is not a host name (RFC 1123: letters, digits, inner '-', labels of at most 63, 253 in all)`;
	return null;
}

/** Back to hosts-file text for dnsmasq's addn-hosts: only lines that passed parseHosts. */
export function renderHosts(entries: HostEntry[]): string {
	return entries.map((e) => `${e.address} ${e.names.join(" ")}\n`).join("");
}

export function checkDomain(value: unknown): string {
	if (typeof value !== "string" || !isHostName(value)) invalid("domain", "must be a DNS name such as lan.example (letters, digits, inner '-', dots)");
	return value.replace(/\.$/, "");
}

export function checkUpstreams(value: unknown): string[] {
	if (!Array.isArray(value) || value.length > 8) invalid("upstreams", "must be a list of at most 8 IP addresses");
	value.forEach((v, i) => {
		if (typeof v !== "string" || !net.isIP(v)) invalid(`upstreams[${i}]`, "must be an IPv4 or IPv6 address");
	});
	return value as string[];
}
