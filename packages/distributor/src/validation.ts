import os from "node:os";
import { IPV4_PATTERN, invalid } from "@clusterplatform/core";

/** Interface names are checked by core (net-device.ts): the site DNS binds to the same kind of name. */
export { DEVICE_PATTERN, checkDeviceExists, checkDeviceName } from "@clusterplatform/core";

/**
 * What a client may name in a distributor command. Everything here ends up in dnsmasq's
 * configuration file, so values are allow-listed, never escaped.
 */

/** Boot-file and script URLs: http(s) only, and no character that means something to dnsmasq's parser. */
const URL_CHARACTERS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+;=%]+$/;
const URL_MAX_LENGTH = 1024;

export function checkUrl(field: string, value: unknown): string {
	if (typeof value !== "string" || value === "") invalid(field, "must be an http:// or https:// URL");
	if (value.length > URL_MAX_LENGTH) invalid(field, `must be at most ${URL_MAX_LENGTH} characters`);
	let url: URL;
	try {
		url = new URL(value);
	} catch {
		invalid(field, "must be an http:// or https:// URL");
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") invalid(field, `must use http or https, not ${url.protocol.replace(/:$/, "")}`);
	// Commas separate dnsmasq option fields: a URL with one (or a space, quote, …) could add options.
	if (!URL_CHARACTERS.test(value) || value.includes(",")) invalid(field, "contains characters a boot URL may not have (commas, spaces, quotes or control characters)");
	return value;
}

export function checkIPv4(field: string, value: unknown): string {
	if (typeof value !== "string" || !IPV4_PATTERN.test(value)) invalid(field, "must be an IPv4 address such as 192.168.178.1");
	return value;
}

function toNumber(ip: string): number {
	return ip.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
}

function toAddress(value: number): string {
	return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
}

export interface ProxyNetwork {
	network: string;
	netmask: string;
	/** The device's own address on that network (HTTP boot answers from and serves on it). */
	address?: string;
}

/**
 * Proxy DHCP answers on one IPv4 network of the device; `range` (any address in it, e.g. the
 * router's 192.168.178.1) picks which one.
 */
export function proxyNetworkOf(device: string, range: string, interfaces = os.networkInterfaces()): ProxyNetwork {
	checkIPv4("range", range);
	const addresses = (interfaces[device] ?? []).filter((a) => a.family === "IPv4");
	if (addresses.length === 0) invalid("device", `interface "${device}" has no IPv4 address, so it cannot answer proxy DHCP`);
	for (const address of addresses) {
		const mask = toNumber(address.netmask);
		if (((toNumber(address.address) & mask) >>> 0) === ((toNumber(range) & mask) >>> 0)) {
			return { network: toAddress((toNumber(range) & mask) >>> 0), netmask: address.netmask, address: address.address };
		}
	}
	invalid("range", `${range} is not on a network of ${device} (${addresses.map((a) => a.cidr).join(", ")})`);
}
