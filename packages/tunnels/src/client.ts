import net from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import { Client, type ClientChannel } from "ssh2";
import { ConfigError, PORT_PARAM, configOf, defineService, parseHostPort } from "@clusterplatform/core";
import { TUNNEL_PROBLEM_EVENT, bindOf, userOf } from "./settings";
import type { TunnelGrant } from "./manager";

/** What the manager pushes: TunnelGrant, checked as it arrives. */
const GRANT_PARAMS = {
	id: { type: "number", integer: true, positive: true },
	target: { type: "string", max: 300 },
	remotePort: PORT_PARAM,
	public: "boolean",
	token: { type: "string", max: 200 },
	sshHost: { type: "string", max: 253 },
	sshPort: PORT_PARAM,
	hostKeys: { type: "array", max: 64, items: { type: "string", max: 4096 } },
};
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;
const CONNECT_TIMEOUT_MS = 15_000;

/**
 * One tunnel at the site: an outbound SSH connection asking for its reverse forward, each forwarded
 * connection piped to the target; reconnects with doubling backoff until stopped.
 */
export class TunnelLink {
	private client: Client | null = null;
	private retryMs = FIRST_RETRY_MS;
	private timer: NodeJS.Timeout | null = null;
	private stopped = false;

	constructor(
		readonly grant: TunnelGrant,
		private readonly server: { host: string; port: number },
		private readonly onProblem: (reason: string) => void,
	) {}

	start(): void {
		this.stopped = false;
		this.connect();
	}

	stop(): void {
		this.stopped = true;
		if (this.timer) clearTimeout(this.timer);
		this.client?.end();
		this.client = null;
	}

	private connect(): void {
		const { grant } = this;
		const target = parseHostPort(grant.target, "target");
		const client = new Client();
		this.client = client;
		let failed = false;
		const retry = (reason: string) => {
			if (failed || this.stopped) return;
			failed = true;
			client.end();
			this.onProblem(`${reason}; retrying in ${Math.round(this.retryMs / 1000)}s`);
			this.timer = setTimeout(() => this.connect(), this.retryMs);
			this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
		};
		client.on("ready", () => {
			client.forwardIn(bindOf(grant.public), grant.remotePort, (err) => {
				if (err) return retry(`the tunnel-server refused the forward of port ${grant.remotePort}: ${err.message}`);
				this.retryMs = FIRST_RETRY_MS;
			});
		});
		client.on("tcp connection", (_info, accept, reject) => {
			const socket = net.connect(target.port, target.host);
			socket.once("connect", () => {
				const channel: ClientChannel = accept();
				socket.pipe(channel).pipe(socket);
				channel.on("error", () => socket.destroy());
			});
			socket.once("error", () => reject());
		});
		client.on("error", (err) => retry(`tunnel-server ${this.server.host}:${this.server.port}: ${err.message}`));
		client.on("close", () => retry("connection to the tunnel-server closed"));
		const pinned = (key: Buffer) => {
			if (grant.hostKeys.includes(key.toString("base64"))) return true;
			retry(`tunnel-server ${this.server.host}:${this.server.port} showed a host key no online tunnel-server has (${grant.hostKeys.length} known)`);
			return false;
		};
		client.connect({ host: this.server.host, port: this.server.port, hostVerifier: pinned, username: userOf(grant.id), password: grant.token, readyTimeout: CONNECT_TIMEOUT_MS, keepaliveInterval: 15_000 });
	}
}

/** Whether a pushed grant is the one a link runs with (host keys in any order). */
function sameGrant(a: TunnelGrant, b: TunnelGrant): boolean {
	const key = (g: TunnelGrant) => JSON.stringify([g.token, g.target, g.remotePort, g.public, g.sshHost, g.sshPort, [...g.hostKeys].sort()]);
	return key(a) === key(b);
}

interface TunnelClientVars {
	/** The running link of each tunnel, by id. */
	links: Map<number, TunnelLink>;
	/** The apply under way; the next one waits for it. */
	applying?: Promise<{ links: number }>;
	stopping?: boolean;
	artifactId: string;
}

/**
 * The site side (with CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID naming the site): keeps one TunnelLink
 * per live tunnel of its site. It calls nothing on the cluster (a site's bus credential may not):
 * the "tunnels" manager pushes the site's grants here (`apply`) when they change, when this client
 * appears and every few seconds, and problems go back as an event.
 */
export const TunnelClientService: ServiceSchema = defineService<{ apply(grants: TunnelGrant[]): Promise<{ links: number }> }, TunnelClientVars>({
	name: "tunnel-client",
	actions: {
		apply: {
			params: { grants: { type: "array", max: 1000, items: { type: "object", props: GRANT_PARAMS } } },
			handler(ctx: Context<{ grants: TunnelGrant[] }>) {
				return this.apply(ctx.params.grants);
			},
		},
	},
	methods: {
		/** Serialised: starts links for new tunnels, stops links for closed ones. */
		apply(grants: TunnelGrant[]): Promise<{ links: number }> {
			const applying = (this.applying ?? Promise.resolve()).then(() => {
				const links = this.links;
				if (this.stopping) return { links: links.size };
				for (const [id, link] of links) {
					// Gone, or changed (a new password, target, port or server key): the link starts again.
					const grant = grants.find((g) => g.id === id);
					if (!grant || !sameGrant(grant, link.grant)) {
						link.stop();
						links.delete(id);
					}
				}
				for (const grant of grants) {
					if (links.has(grant.id)) continue;
					const server = configOf(this.broker).tunnels.server ?? { host: grant.sshHost, port: grant.sshPort };
					const link = new TunnelLink(grant, server, (reason) => void this.broker.emit(TUNNEL_PROBLEM_EVENT, { id: grant.id, reason: reason.slice(0, 1000) }).catch(() => undefined));
					links.set(grant.id, link);
					link.start();
				}
				return { links: links.size };
			});
			this.applying = applying;
			return applying;
		},
	},
	created() {
		this.links = new Map<number, TunnelLink>();
		const artifactId = configOf(this.broker).distributorArtifactId;
		if (!artifactId) throw new ConfigError("tunnel-client needs CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID (the site whose tunnels it opens)");
		this.artifactId = artifactId;
		// The manager finds a site's clients by this (and checks the node ID names the same site).
		Object.assign(this.metadata, { artifactId });
	},
	async stopped() {
		this.stopping = true;
		await this.applying;
		for (const link of this.links.values()) link.stop();
		this.links.clear();
	},
});
