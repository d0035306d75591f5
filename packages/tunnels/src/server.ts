import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { Server, utils, type Connection, type ServerChannel } from "ssh2";
import { ConfigError, configOf, type Config } from "@clusterplatform/core";
import { TUNNEL_CLOSED_EVENT, bindOf, idOfUser } from "./settings";

interface Grant {
	id: number;
	remotePort: number;
	public: boolean;
}

/** One authenticated client: its tunnel and the listener its forward opened. */
interface Session {
	grant: Grant;
	client: Connection;
	listener: net.Server | null;
}

/** The server's SSH host key: TUNNEL_HOST_KEY (PEM/OpenSSH), else generated once into the data dir. */
export function hostKey({ dataDir, tunnels }: Config): string {
	if (tunnels.hostKey) return tunnels.hostKey;
	const file = path.join(dataDir, "tunnel-server", "host_ed25519");
	if (!fs.existsSync(file)) {
		fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
		fs.writeFileSync(file, utils.generateKeyPairSync("ed25519").private, { mode: 0o600 });
	}
	return fs.readFileSync(file, "utf8");
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
	return new Promise((resolve, reject) => {
		server.once("error", reject);
		server.listen({ port, host, exclusive: true }, () => {
			server.off("error", reject);
			resolve();
		});
	});
}

/**
 * The cluster's public tunnel endpoint: an SSH server (ssh2) on TUNNEL_SSH_PORT that only tunnel
 * clients the manager issued may log into (user tunnel-<id>, password its token). Each may ask for
 * exactly one reverse forward, its row's remotePort on 127.0.0.1 (0.0.0.0 when public); no shell,
 * exec, subsystem or direct-tcpip. Connections to that port travel as channels of the one SSH link.
 */
export const TunnelServerService: ServiceSchema = {
	name: "tunnel-server",
	events: {
		[TUNNEL_CLOSED_EVENT]: {
			handler(this: any, ctx: Context<{ id: number }>) {
				for (const session of this.sessions as Set<Session>) if (session.grant.id === ctx.params.id) this.drop(session);
			},
		},
	},
	methods: {
		async authorize(this: any, user: string, password: string): Promise<Grant | null> {
			const id = idOfUser(user);
			if (id === null) return null;
			return this.broker.call("tunnels.authorize", { id, token: password }).catch(() => null);
		},
		accept(this: any, client: Connection): void {
			const session: Session = { grant: null as unknown as Grant, client, listener: null };
			client.on("authentication", (auth) => {
				if (auth.method !== "password") return auth.reject(["password"]);
				this.authorize(auth.username, auth.password).then((grant: Grant | null) => {
					if (!grant) return auth.reject(["password"]);
					session.grant = grant;
					(this.sessions as Set<Session>).add(session);
					auth.accept();
				});
			});
			client.on("ready", () => {
				client.on("session", (_accept, reject) => reject());
				client.on("tcpip", (_accept, reject) => reject());
				client.on("request", (accept, reject, name, info: any) => {
					if (name === "tcpip-forward") this.forward(session, info, accept, reject);
					else if (name === "cancel-tcpip-forward" && session.listener) {
						this.closeListener(session);
						accept?.();
					} else reject?.();
				});
			});
			client.on("error", () => undefined);
			client.on("close", () => this.drop(session));
		},
		/** Opens the row's port and carries each connection to it as a forwarded-tcpip channel. */
		forward(this: any, session: Session, info: { bindAddr: string; bindPort: number }, accept?: (port?: number) => void, reject?: () => void): void {
			const { grant } = session;
			const bind = bindOf(grant.public);
			const allowedAddr = info.bindAddr === bind || (!grant.public && ["localhost", ""].includes(info.bindAddr));
			if (session.listener || info.bindPort !== grant.remotePort || !allowedAddr) {
				this.logger.warn(`tunnel ${grant.id}: refused forward ${info.bindAddr}:${info.bindPort} (allowed ${bind}:${grant.remotePort})`);
				return reject?.();
			}
			const listener = net.createServer((socket) => {
				session.client.forwardOut(info.bindAddr, grant.remotePort, socket.remoteAddress ?? "", socket.remotePort ?? 0, (err: Error | undefined, channel: ServerChannel) => {
					if (err) return socket.destroy();
					socket.pipe(channel).pipe(socket);
					socket.on("error", () => channel.close());
					channel.on("error", () => socket.destroy());
				});
			});
			session.listener = listener;
			listen(listener, grant.remotePort, bind).then(
				() => {
					accept?.(grant.remotePort);
					void this.report(grant.id, "open", null);
				},
				(err: Error) => {
					session.listener = null;
					this.logger.warn(`tunnel ${grant.id}: cannot listen on ${bind}:${grant.remotePort}: ${err.message}`);
					reject?.();
				},
			);
		},
		closeListener(session: Session): void {
			session.listener?.close();
			session.listener = null;
		},
		drop(this: any, session: Session): void {
			if (!(this.sessions as Set<Session>).delete(session)) return;
			const hadForward = session.listener !== null;
			this.closeListener(session);
			session.client.end();
			if (hadForward) void this.report(session.grant.id, "pending", "tunnel client disconnected");
		},
		report(this: any, id: number, status: string, reason: string | null) {
			return this.broker.call("tunnels.report", { id, status, ...(reason ? { reason } : {}) }).catch((err: Error) => this.logger.warn(`tunnel ${id}: status not recorded: ${err.message}`));
		},
	},
	created(this: any) {
		this.sessions = new Set<Session>();
		this.hostKey = hostKey(configOf(this.broker));
		const parsed = utils.parseKey(this.hostKey);
		if (parsed instanceof Error) throw new ConfigError(`tunnel-server host key: ${parsed.message}`);
		const key = Array.isArray(parsed) ? parsed[0]! : parsed;
		// Published with the service: the manager hands it to clients, which pin it.
		Object.assign(this.metadata, { hostKey: key.getPublicSSH().toString("base64") });
	},
	async started(this: any) {
		const settings = configOf(this.broker).tunnels;
		this.ssh = new Server({ hostKeys: [this.hostKey] }, (client: Connection) => this.accept(client));
		await new Promise<void>((resolve, reject) => {
			this.ssh.once("error", reject);
			this.ssh.listen(settings.sshPort, settings.sshBind, () => resolve());
		});
		this.logger.info(`tunnel SSH endpoint on ${settings.sshBind}:${settings.sshPort}`);
	},
	async stopped(this: any) {
		for (const session of [...(this.sessions as Set<Session>)]) this.drop(session);
		await new Promise<void>((resolve) => (this.ssh ? this.ssh.close(() => resolve()) : resolve()));
	},
};
