/** Names and conventions shared by the tunnel services; their settings are core's Config.tunnels. */

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
/** Emitted by a site's tunnel-client when its tunnel cannot open (the manager records the reason). */
export const TUNNEL_PROBLEM_EVENT = "tunnels.problem";
/** How often the manager pushes every site's grants to its clients, besides pushing on changes. */
export const GRANTS_PUSH_MS = 15_000;
