import path from "node:path";
import { parseHostPort, type HostPort } from "./address";
import { ConfigError } from "./errors";

/** Where artifacts live: files under the data dir, or an S3/MinIO bucket. */
export type StoreConfig =
	| { kind: "files"; root: string }
	| {
			kind: "s3";
			endPoint: string;
			port: number;
			useSSL: boolean;
			accessKey: string;
			secretKey: string;
			bucket: string;
			region: string;
			/** Base URL clients download from (e.g. http://minio.example:30003); defaults to the endpoint. */
			publicUrl: string;
	  };

/** Tunnels (packages/tunnels): the cluster's SSH endpoint and what sites are told to dial. */
export interface TunnelConfig {
	/** Port the tunnel-server's SSH endpoint listens on (TUNNEL_SSH_PORT, default 2222). */
	sshPort: number;
	/** Address it binds (TUNNEL_SSH_HOST, default 0.0.0.0). */
	sshBind: string;
	/** Host name sites dial and public URLs name (TUNNEL_PUBLIC_HOST, default the PUBLIC_URL's host). */
	publicHost: string | null;
	/** Remote ports the manager hands out (TUNNEL_PORT_RANGE "from-to", default 20000-20999). */
	portRange: [number, number];
	/** Where a site's tunnel-client dials, overriding what the manager says (TUNNEL_SERVER "host:port"). */
	server: HostPort | null;
	/** The tunnel-server's SSH host key (TUNNEL_HOST_KEY, PEM/OpenSSH); generated into the data dir when unset. */
	hostKey: string | null;
}

export interface Config {
	port: number;
	host: string;
	/** Base URL booting hosts and clients reach the gateway at. */
	publicUrl: string;
	dataDir: string;
	/** null: in-process transport (everything in one process). */
	transporter: string | null;
	nodeId: string | undefined;
	/** null: SQLite file under the data dir. */
	databaseUrl: string | null;
	/** null: the launcher starts a private redis-server on a unix socket in the data dir. */
	redisUrl: string | null;
	store: StoreConfig;
	logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace";
	/** Let several gateway processes listen on the same port (SO_REUSEPORT, REUSE_PORT=true). */
	reusePort: boolean;
	/** Largest request body the gateway accepts, in bytes. */
	bodyLimit: number;
	/** Admin API needs a bearer token ("on", the default) or not ("off": a local lab only). */
	auth: "on" | "off";
	/** Accepted tokens as name:<sha256 hex>[:read] entries (API_TOKENS), besides the data dir's tokens file. */
	apiTokens: string | null;
	/** Key that seals private SSH keys at rest (SECRETS_KEY); a generated key file in the data dir when unset. */
	secretsKey: string | null;
	/** Site tag of a distributor worker (CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID). */
	distributorArtifactId: string | null;
	tunnels: TunnelConfig;
	/**
	 * Hosts or addresses mirror sources may use although they are loopback, private or link-local
	 * (MIRROR_ALLOWED_HOSTS, comma list, e.g. a LAN mirror); none by default.
	 */
	mirrorAllowedHosts: string[];
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
	const raw = env[name];
	if (raw === undefined || raw === "") return fallback;
	const value = Number(raw);
	if (!Number.isInteger(value) || value < min || value > max) {
		throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
	}
	return value;
}

function optional(env: Env, name: string): string | null {
	const value = env[name];
	return value === undefined || value.trim() === "" ? null : value.trim();
}

function storeConfig(env: Env, dataDir: string): StoreConfig {
	const endpoint = optional(env, "S3_ENDPOINT");
	if (!endpoint) return { kind: "files", root: path.join(dataDir, "artifacts") };
	const accessKey = optional(env, "S3_ACCESS_KEY");
	const secretKey = optional(env, "S3_SECRET_KEY");
	if (!accessKey || !secretKey) throw new ConfigError("S3_ENDPOINT is set: S3_ACCESS_KEY and S3_SECRET_KEY are required too");
	const useSSL = env.S3_USE_SSL === "true";
	const port = integer(env, "S3_PORT", useSSL ? 443 : 9000, 1, 65535);
	const base = `${useSSL ? "https" : "http"}://${endpoint}:${port}`;
	return {
		kind: "s3",
		endPoint: endpoint,
		port,
		useSSL,
		accessKey,
		secretKey,
		bucket: optional(env, "S3_BUCKET") ?? "clusterplatform",
		region: optional(env, "S3_REGION") ?? "us-east-1",
		publicUrl: (optional(env, "S3_PUBLIC_URL") ?? base).replace(/\/+$/, ""),
	};
}

function authMode(env: Env): Config["auth"] {
	const mode = optional(env, "AUTH") ?? "on";
	if (mode !== "on" && mode !== "off") throw new ConfigError(`AUTH must be "on" or "off", got "${mode}"`);
	return mode;
}

function portRange(env: Env, name: string, fallback: string): [number, number] {
	const raw = optional(env, name) ?? fallback;
	const match = /^(\d{1,5})-(\d{1,5})$/.exec(raw);
	const [from, to] = match ? [Number(match[1]), Number(match[2])] : [0, 0];
	if (!match || from < 1 || to > 65535 || from > to) throw new ConfigError(`${name} must be an upward port range like ${fallback}, got "${raw}"`);
	return [from, to];
}

function tunnelConfig(env: Env): TunnelConfig {
	const server = optional(env, "TUNNEL_SERVER");
	return {
		sshPort: integer(env, "TUNNEL_SSH_PORT", 2222, 1, 65535),
		sshBind: optional(env, "TUNNEL_SSH_HOST") ?? "0.0.0.0",
		publicHost: optional(env, "TUNNEL_PUBLIC_HOST"),
		portRange: portRange(env, "TUNNEL_PORT_RANGE", "20000-20999"),
		server: server ? parseHostPort(server, "TUNNEL_SERVER") : null,
		hostKey: optional(env, "TUNNEL_HOST_KEY"),
	};
}

/** Typed configuration from environment variables; throws ConfigError naming the bad variable. */
export function loadConfig(env: Env = process.env): Config {
	const port = integer(env, "PORT", 3000, 0, 65535);
	const dataDir = path.resolve(optional(env, "DATA_DIR") ?? "data");
	const logLevel = (optional(env, "LOG_LEVEL") ?? "info") as Config["logLevel"];
	if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}`);
	const transporter = optional(env, "TRANSPORTER");
	if (transporter && !/^nats:\/\//.test(transporter)) throw new ConfigError(`TRANSPORTER must be a nats:// URL, got "${transporter}"`);
	return {
		port,
		host: optional(env, "HOST") ?? "0.0.0.0",
		publicUrl: (optional(env, "PUBLIC_URL") ?? `http://localhost:${port}`).replace(/\/+$/, ""),
		dataDir,
		transporter,
		nodeId: optional(env, "NODE_ID") ?? undefined,
		databaseUrl: optional(env, "DATABASE_URL"),
		redisUrl: optional(env, "REDIS_URL"),
		store: storeConfig(env, dataDir),
		logLevel,
		reusePort: env.REUSE_PORT === "true",
		bodyLimit: integer(env, "BODY_LIMIT", 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
		auth: authMode(env),
		apiTokens: optional(env, "API_TOKENS"),
		secretsKey: optional(env, "SECRETS_KEY"),
		distributorArtifactId: optional(env, "CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID"),
		tunnels: tunnelConfig(env),
		mirrorAllowedHosts: (optional(env, "MIRROR_ALLOWED_HOSTS") ?? "").split(",").map((h) => h.trim().toLowerCase().replace(/^\[|\]$/g, "")).filter(Boolean),
	};
}
