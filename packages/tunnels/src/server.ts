import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { Server, utils, type Connection, type ServerChannel } from "ssh2";
import { ConfigError, configOf, defineService, listenOn, type Config } from "@clusterplatform/core";
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

/** A connection that has not logged in yet, and the timer that cuts it. */
interface Waiting {
	socket: net.Socket;
	timer: NodeJS.Timeout;
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

/** Wrong passwords one connection may try before it is cut. */
const MAX_PASSWORD_ATTEMPTS = 3;

const peerOf = (address: string | undefined, port: number | undefined) => `${address ?? "?"}:${port ?? 0}`;

interface TunnelServerMethods {
	authorize(user: string, password: string): Promise<Grant | null>;
	admit(socket: net.Socket): void;
	loggedIn(peer: string): void;
	accept(client: Connection, info: { ip: string; port: number }): void;
	forward(session: Session, info: { bindAddr: string; bindPort: number }, accept?: (port?: number) => void, reject?: () => void): void;
	closeListener(session: Session): void;
	drop(session: Session): void;
	report(id: number, status: string, reason: string | null): Promise<unknown>;
}

interface TunnelServerVars {
	/** Logged-in clients. */
	sessions: Set<Session>;
	/** Connections waiting to log in, by peer address:port. */
	unauthenticated: Map<string, Waiting>;
	hostKey: string;
	ssh: Server;
	tcp?: net.Server;
}

/**
 * The cluster's public tunnel endpoint: an SSH server (ssh2) on TUNNEL_SSH_PORT that only tunnel
 * clients the manager issued may log into (user tunnel-<id>, password its token). Each may ask for
 * exactly one reverse forward, its row's remotePort on 127.0.0.1 (0.0.0.0 when public); no shell,
 * exec, subsystem or direct-tcpip. Connections to that port travel as channels of the one SSH link.
 *
 * The port faces the internet, so what a stranger can hold is bounded (Config.tunnels): a connection
 * that has not logged in within TUNNEL_AUTH_TIMEOUT is cut, at most TUNNEL_MAX_UNAUTHENTICATED wait
 * to log in and TUNNEL_MAX_CONNECTIONS are held in all; past either cap a new one is closed at once.
 */
export const TunnelServerService: ServiceSchema = defineService<TunnelServerMethods, TunnelServerVars>({
	name: "tunnel-server",
	events: {
		[TUNNEL_CLOSED_EVENT]: {
			handler(ctx: Context<{ id: number }>) {
				for (const session of this.sessions) if (session.grant.id === ctx.params.id) this.drop(session);
			},
		},
	},
	methods: {
		async authorize(user: string, password: string): Promise<Grant | null> {
			const id = idOfUser(user);
			if (id === null) return null;
			return this.broker.call<Grant | null, { id: number; token: string }>("tunnels.authorize", { id, token: password }).catch(() => null);
		},
		/** A TCP connection to the SSH port: held (and timed) only while there is room for one more. */
		admit(socket: net.Socket): void {
			const { authTimeoutMs, maxUnauthenticated } = configOf(this.broker).tunnels;
			const waiting = this.unauthenticated;
			const peer = peerOf(socket.remoteAddress, socket.remotePort);
			if (waiting.size >= maxUnauthenticated || socket.remoteAddress === undefined || waiting.has(peer)) {
				socket.destroy();
				return;
			}
			waiting.set(peer, { socket, timer: setTimeout(() => socket.destroy(), authTimeoutMs) });
			socket.once("close", () => this.loggedIn(peer));
			socket.on("error", () => undefined);
			this.ssh.injectSocket(socket);
		},
		/** The connection from `peer` logged in (or went): no longer timed, no longer counted as waiting. */
		loggedIn(peer: string): void {
			clearTimeout(this.unauthenticated.get(peer)?.timer);
			this.unauthenticated.delete(peer);
		},
		accept(client: Connection, info: { ip: string; port: number }): void {
			const session: Session = { grant: null as unknown as Grant, client, listener: null };
			let wrongPasswords = 0;
			client.on("authentication", (auth) => {
				if (auth.method !== "password") return auth.reject(["password"]);
				this.authorize(auth.username, auth.password).then((grant) => {
					if (!grant) {
						auth.reject(["password"]);
						if (++wrongPasswords >= MAX_PASSWORD_ATTEMPTS) client.end();
						return;
					}
					session.grant = grant;
					this.sessions.add(session);
					this.loggedIn(peerOf(info.ip, info.port));
					auth.accept();
				});
			});
			client.on("ready", () => {
				client.on("session", (_accept, reject) => reject());
				client.on("tcpip", (_accept, reject) => reject());
				client.on("request", (accept, reject, name, info) => {
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
		forward(session: Session, info: { bindAddr: string; bindPort: number }, accept?: (port?: number) => void, reject?: () => void): void {
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
			listenOn(listener, grant.remotePort, bind).then(
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
		drop(session: Session): void {
			if (!this.sessions.delete(session)) return;
			const hadForward = session.listener !== null;
			this.closeListener(session);
			session.client.end();
			if (hadForward) void this.report(session.grant.id, "pending", "tunnel client disconnected");
		},
		report(id: number, status: string, reason: string | null) {
			return this.broker.call("tunnels.report", { id, status, ...(reason ? { reason } : {}) }).catch((err: Error) => this.logger.warn(`tunnel ${id}: status not recorded: ${err.message}`));
		},
	},
	created() {
		this.sessions = new Set<Session>();
		this.unauthenticated = new Map<string, Waiting>();
		this.hostKey = hostKey(configOf(this.broker));
		const parsed = utils.parseKey(this.hostKey);
		if (parsed instanceof Error) throw new ConfigError(`tunnel-server host key: ${parsed.message}`);
		const key = Array.isArray(parsed) ? parsed[0]! : parsed;
		// Published with the service: the manager hands it to clients, which pin it.
		Object.assign(this.metadata, { hostKey: key.getPublicSSH().toString("base64") });
	},
	async started() {
		const settings = configOf(this.broker).tunnels;
		// ssh2 speaks SSH on sockets this listener admits (it would time nothing before a client's first bytes).
		this.ssh = new Server({ hostKeys: [this.hostKey] }, (client: Connection, info: { ip: string; port: number }) => this.accept(client, info));
		const tcp = (this.tcp = net.createServer((socket) => this.admit(socket)));
		tcp.maxConnections = settings.maxConnections;
		await listenOn(tcp, settings.sshPort, settings.sshBind);
		tcp.on("error", (err: Error) => this.logger.warn(`tunnel SSH endpoint: ${err.message}`));
		this.logger.info(`tunnel SSH endpoint on ${settings.sshBind}:${settings.sshPort}`);
	},
	async stopped() {
		for (const session of [...this.sessions]) this.drop(session);
		for (const { socket } of [...this.unauthenticated.values()]) socket.destroy();
		const tcp = this.tcp;
		await new Promise<void>((resolve) => (tcp ? tcp.close(() => resolve()) : resolve()));
	},
});
