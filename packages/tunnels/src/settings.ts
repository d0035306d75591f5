import net from "node:net";
import { ConfigError, invalid } from "@clusterplatform/core";

type Env = Record<string, string | undefined>;

/** Tunnel settings from the environment (kept here until they earn a place in core's Config). */
export interface TunnelSettings {
	/** Port the tunnel-server's SSH endpoint listens on (TUNNEL_SSH_PORT, default 2222). */
	sshPort: number;
	/** Address it binds (TUNNEL_SSH_HOST, default 0.0.0.0). */
	sshBind: string;
	/** Host name sites dial and public URLs name (TUNNEL_PUBLIC_HOST, default the PUBLIC_URL's host). */
	publicHost: string | null;
	/** Remote ports the manager hands out (TUNNEL_PORT_RANGE "from-to", default 20000-20999). */
	portRange: [number, number];
	/** Where a site's tunnel-client dials, overriding what the manager says (TUNNEL_SERVER "host:port"). */
	server: { host: string; port: number } | null;
}

function port(name: string, raw: string): number {
	const value = Number(raw);
	if (!Number.isInteger(value) || value < 1 || value > 65535) throw new ConfigError(`${name} must be a port from 1 to 65535, got "${raw}"`);
	return value;
}

export function tunnelSettings(env: Env = process.env): TunnelSettings {
	const range = (env.TUNNEL_PORT_RANGE ?? "20000-20999").trim();
	const match = /^(\d+)-(\d+)$/.exec(range);
	if (!match) throw new ConfigError(`TUNNEL_PORT_RANGE must look like 20000-20999, got "${range}"`);
	const from = port("TUNNEL_PORT_RANGE", match[1]!);
	const to = port("TUNNEL_PORT_RANGE", match[2]!);
	if (from > to) throw new ConfigError(`TUNNEL_PORT_RANGE must go upwards, got "${range}"`);
	let server: TunnelSettings["server"] = null;
	if (env.TUNNEL_SERVER?.trim()) {
		const target = parseTarget(env.TUNNEL_SERVER.trim(), "TUNNEL_SERVER");
		server = target;
	}
	return {
		sshPort: env.TUNNEL_SSH_PORT?.trim() ? port("TUNNEL_SSH_PORT", env.TUNNEL_SSH_PORT.trim()) : 2222,
		sshBind: env.TUNNEL_SSH_HOST?.trim() || "0.0.0.0",
		publicHost: env.TUNNEL_PUBLIC_HOST?.trim() || null,
		portRange: [from, to],
		server,
	};
}

/** A DNS name: labels of letters, digits and inner hyphens. */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** "host:port" or "[v6]:port" → parts; a 422 naming `field` otherwise (ConfigError for settings). */
export function parseTarget(value: string, field: string): { host: string; port: number } {
	const fail = (reason: string): never => {
		if (field === field.toUpperCase()) throw new ConfigError(`${field} ${reason}`);
		return invalid(field, reason);
	};
	const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(value);
	if (!match) return fail(`must be "host:port" (e.g. 127.0.0.1:3000 or [fd00::5]:22), got "${value.slice(0, 80)}"`);
	const host = (match[1] ?? match[2])!;
	if (match[1] ? net.isIPv6(host) === false : !(net.isIPv4(host) || HOST_NAME.test(host))) return fail(`has "${host.slice(0, 80)}" as host: not an IP address or host name`);
	const portNumber = Number(match[3]);
	if (portNumber < 1 || portNumber > 65535) return fail(`has port ${match[3]}: must be 1..65535`);
	return { host, port: portNumber };
}

/** SSH user name a tunnel's client logs in with; its password is the tunnel's token. */
export const userOf = (id: number) => `tunnel-${id}`;
export function idOfUser(user: string): number | null {
	const match = /^tunnel-([1-9]\d{0,9})$/.exec(user);
	return match ? Number(match[1]) : null;
}

/** Bind address of a forward: loopback on the tunnel-server unless the row says public. */
export const bindOf = (isPublic: boolean) => (isPublic ? "0.0.0.0" : "127.0.0.1");

/** Broadcast when a site's tunnels change (clients re-read theirs). */
export const TUNNELS_CHANGED_EVENT = "tunnels.changed";
/** Broadcast when a tunnel is closed (the server drops its forward and connection). */
export const TUNNEL_CLOSED_EVENT = "tunnels.closed";
