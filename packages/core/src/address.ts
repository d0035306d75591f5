import net from "node:net";
import { ConfigError, invalid } from "./errors";

/** A DNS name (RFC 1123): labels of letters, digits and inner hyphens (1..63), at most 253 in all. */
export const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A DNS name, fully qualified ("lan.example.") or not. */
export function isHostName(value: string): boolean {
	return HOST_NAME.test(value.endsWith(".") ? value.slice(0, -1) : value);
}

/** An IPv4 address in dotted quads, as a validator pattern; the same addresses net.isIPv4 takes. */
export const IPV4_PATTERN = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export interface HostPort {
	host: string;
	port: number;
}

/**
 * "host:port" or "[v6]:port" → parts. A bad value is a ConfigError when `field` is an environment
 * variable (upper case), else a 422 naming the field.
 */
export function parseHostPort(value: string, field: string): HostPort {
	const fail = (reason: string): never => {
		if (field === field.toUpperCase()) throw new ConfigError(`${field} ${reason}`);
		return invalid(field, reason);
	};
	const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(value);
	if (!match) return fail(`must be "host:port" (e.g. 127.0.0.1:3000 or [fd00::5]:22), got "${value.slice(0, 80)}"`);
	const host = (match[1] ?? match[2])!;
	if (match[1] ? net.isIPv6(host) === false : !(net.isIPv4(host) || HOST_NAME.test(host))) return fail(`has "${host.slice(0, 80)}" as host: not an IP address or host name`);
	const port = Number(match[3]);
	if (port < 1 || port > 65535) return fail(`has port ${match[3]}: must be 1..65535`);
	return { host, port };
}

/** Listen on host:port, resolving once listening and rejecting with the listen error (e.g. EADDRINUSE). */
export function listenOn(server: net.Server, port: number, host: string): Promise<void> {
	return new Promise((resolve, reject) => {
		server.once("error", reject);
		server.listen({ port, host, exclusive: true }, () => {
			server.off("error", reject);
			resolve();
		});
	});
}
