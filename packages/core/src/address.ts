import net from "node:net";
import { ConfigError, invalid } from "./errors";

/** A DNS name: labels of letters, digits and inner hyphens. */
export const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

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
