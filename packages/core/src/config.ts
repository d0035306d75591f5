import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseHostPort, type HostPort } from "./address";
import { busUserName, natsConnectionOptions } from "./bus";
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
	/** A connection that has not logged in within this is cut (TUNNEL_AUTH_TIMEOUT seconds, default 10). */
	authTimeoutMs: number;
	/** Connections the SSH endpoint holds; more are closed at once (TUNNEL_MAX_CONNECTIONS, default 1024). */
	maxConnections: number;
	/** Of those, not yet logged in (TUNNEL_MAX_UNAUTHENTICATED, default 64). */
	maxUnauthenticated: number;
}

/** Bounds of the gateway's HTTP listeners against slow or piled-up clients. */
export interface HttpLimits {
	/** Whole request (headers and body) must arrive within this (REQUEST_TIMEOUT seconds, default 30). */
	requestTimeoutMs: number;
	/** Headers must arrive within this (HEADERS_TIMEOUT seconds, default 10, at most REQUEST_TIMEOUT). */
	headersTimeoutMs: number;
	/** Open connections per listener; more are closed at once (MAX_CONNECTIONS, default 4096). */
	maxConnections: number;
	/**
	 * How long responses still running when the gateway stops (a download whose client stopped
	 * reading) may take before their connections are cut (SHUTDOWN_GRACE seconds, default 10).
	 */
	shutdownGraceMs: number;
}

/** The NATS bus's credential and TLS (see bus.ts for who may do what on it). */
export interface BusConfig {
	/** NATS_USER (or the user of TRANSPORTER's URL). */
	user: string | null;
	/** NATS_PASSWORD, or the content of NATS_PASSWORD_FILE (a mounted Secret). */
	password: string | null;
	/**
	 * TLS to NATS: on with a tls:// TRANSPORTER or NATS_TLS_CA. caFile: NATS_TLS_CA, a CA file's path or
	 * the PEM itself (a ConfigMap value); cert and key files for a client certificate (null: system CAs, none).
	 */
	tls: { caFile: string | null; certFile: string | null; keyFile: string | null } | null;
}

/** The ipxes worker's iPXE source settings; packages/ipxe (build.ts) gives them their meaning. */
export interface IpxeConfig {
	/** IPXE_SOURCE_DIR: an iPXE tree, "none" for Debian's prebuilt binaries; null: setup's install when present. */
	sourceDir: string | null;
	/** IPXE_TREES_DIR: where prepared object trees live; null: the default for the source. */
	treesDir: string | null;
	/** IPXE_PREPARE_PLATFORMS (comma or space list) prepared at worker start; null: the default. */
	preparePlatforms: string[] | null;
	/** IPXE_MAKE_JOBS: make -j (default: the cores). */
	makeJobs: number;
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
	bus: BusConfig;
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
	/** The gateway's HTTP listeners: how long a request may take to arrive, and how many connections each holds. */
	http: HttpLimits;
	/** A second gateway listener serving only the machine path (MACHINE_PORT; null: none). */
	machineListener: { port: number; host: string } | null;
	/** Admin API needs a bearer token ("on", the default) or not ("off": a local lab only). */
	auth: "on" | "off";
	/** Accepted tokens as name:<sha256 hex>[:read] entries (API_TOKENS), besides the data dir's tokens file. */
	apiTokens: string | null;
	/** Key that seals private SSH keys and derives tunnel passwords (SECRETS_KEY or SECRETS_KEY_FILE); a generated key file in the data dir when unset. */
	secretsKey: string | null;
	/** Site tag of a distributor worker (CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID). */
	distributorArtifactId: string | null;
	/** TCP port of a distributor's UEFI HTTP boot server (CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT, default 8067; 0: no HTTP boot). */
	distributorHttpPort: number;
	tunnels: TunnelConfig;
	/**
	 * Whether nodes may register with a loopback address (ALLOW_LOOPBACK_NODES=true): only for a lab
	 * whose "nodes" are SSH servers on the distributor's own host, as the tests' stand-in nodes are.
	 * Off, a registration naming 127.0.0.1 cannot point an operator's script at the distributor itself.
	 */
	allowLoopbackNodes: boolean;
	/**
	 * New nodes one address may register without an enrolment token: a burst, then so many a second
	 * (REGISTRATION_BURST, default 120; REGISTRATION_RATE, default 2). Enrolled and operator
	 * registrations are not limited.
	 */
	registrationLimit: { burst: number; perSecond: number };
	/**
	 * Machines (packages/machines): what a machine without a profile boots (MACHINES_UNKNOWN_BOOT:
	 * "local" returns to the firmware's next boot device, normally the disk; "menu"; "none"), and
	 * whether nodes may register without a machine's token (ANONYMOUS_REGISTRATION, default true).
	 * Provisioning: how long a power-cycled machine has to boot and register before it is `failed`
	 * (MACHINES_PROVISION_TIMEOUT seconds, default 1800), and how many machines a bulk provision
	 * drives through their BMCs at once (MACHINES_PROVISION_CONCURRENCY, default 8). At most
	 * MACHINES_DISCOVERED_MAX (default 10000) unknown MACs are recorded as discovered machines;
	 * beyond it they get the default answer and are not recorded.
	 */
	machines: { unknownBoot: "local" | "menu" | "none"; anonymousRegistration: boolean; provisionTimeoutMs: number; provisionConcurrency: number; discoveredMax: number };
	/**
	 * Hosts or addresses mirror sources may use although they are loopback, private or link-local
	 * (MIRROR_ALLOWED_HOSTS, comma list, e.g. a LAN mirror); none by default.
	 */
	mirrorAllowedHosts: string[];
	/** Largest file a mirror takes when its metadata gives no size (MIRROR_MAX_FILE_SIZE, bytes; default 4 GiB). */
	mirrorMaxFileBytes: number;
	/**
	 * Hosts or addresses a distributor may download boot files from although they are loopback,
	 * private or link-local (BOOT_FILE_ALLOWED_HOSTS, comma list); none by default. The gateway's
	 * (PUBLIC_URL) and object store's (S3_PUBLIC_URL) own origins are allowed without it.
	 */
	bootFileAllowedHosts: string[];
	ipxe: IpxeConfig;
	/** The network namespace a dns worker runs its dnsmasq in (CLUSTERPLATFORM_DNS_NETNS); null: its own. */
	dnsNetns: string | null;
}

type Env = Record<string, string | undefined>;

/** A distributor's UEFI HTTP boot file server's default port (CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT; 0 switches it off). */
export const DEFAULT_HTTP_BOOT_PORT = 8067;

/**
 * Every environment variable the provisioner's processes read, all through loadConfig: the list
 * deployments are checked against (test/deploy). Reading a name not on it is a programming error.
 */
export const CONFIG_VARIABLES = [
	"PORT", "HOST", "PUBLIC_URL", "DATA_DIR", "LOG_LEVEL", "NODE_ID", "REUSE_PORT", "BODY_LIMIT",
	"REQUEST_TIMEOUT", "HEADERS_TIMEOUT", "MAX_CONNECTIONS", "SHUTDOWN_GRACE", "MACHINE_PORT", "MACHINE_HOST",
	"AUTH", "API_TOKENS", "SECRETS_KEY", "SECRETS_KEY_FILE",
	"TRANSPORTER", "NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY",
	"DATABASE_URL", "REDIS_URL",
	"S3_ENDPOINT", "S3_PORT", "S3_USE_SSL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET", "S3_REGION", "S3_PUBLIC_URL",
	"CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID", "CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT", "CLUSTERPLATFORM_DNS_NETNS",
	"TUNNEL_SSH_PORT", "TUNNEL_SSH_HOST", "TUNNEL_PUBLIC_HOST", "TUNNEL_PORT_RANGE", "TUNNEL_SERVER", "TUNNEL_HOST_KEY",
	"TUNNEL_AUTH_TIMEOUT", "TUNNEL_MAX_CONNECTIONS", "TUNNEL_MAX_UNAUTHENTICATED",
	"ALLOW_LOOPBACK_NODES", "REGISTRATION_BURST", "REGISTRATION_RATE",
	"MACHINES_UNKNOWN_BOOT", "ANONYMOUS_REGISTRATION", "MACHINES_PROVISION_TIMEOUT", "MACHINES_PROVISION_CONCURRENCY",
	"MACHINES_DISCOVERED_MAX",
	"MIRROR_ALLOWED_HOSTS", "MIRROR_MAX_FILE_SIZE", "BOOT_FILE_ALLOWED_HOSTS",
	"IPXE_SOURCE_DIR", "IPXE_TREES_DIR", "IPXE_PREPARE_PLATFORMS", "IPXE_MAKE_JOBS",
] as const;

const DECLARED = new Set<string>(CONFIG_VARIABLES);

/** The environment as loadConfig may read it: a variable name missing from CONFIG_VARIABLES throws. */
function declaredOnly(env: Env): Env {
	return new Proxy(env, {
		get(target, name) {
			if (typeof name === "string" && /^[A-Z][A-Z0-9_]*$/.test(name) && !DECLARED.has(name)) {
				throw new Error(`loadConfig read ${name}, which CONFIG_VARIABLES does not declare`);
			}
			return Reflect.get(target, name);
		},
	});
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
	const raw = env[name];
	if (raw === undefined || raw === "") return fallback;
	// Digits only: "1e3" or "0x50" are typing accidents, not numbers an operator means.
	const value = /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
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
		authTimeoutMs: integer(env, "TUNNEL_AUTH_TIMEOUT", 10, 1, 600) * 1000,
		maxConnections: integer(env, "TUNNEL_MAX_CONNECTIONS", 1024, 1, 1_000_000),
		maxUnauthenticated: integer(env, "TUNNEL_MAX_UNAUTHENTICATED", 64, 1, 1_000_000),
	};
}

function secretFromFile(env: Env, name: string): string | null {
	const file = optional(env, `${name}_FILE`);
	if (!file) return optional(env, name);
	let text: string;
	try {
		text = fs.readFileSync(file, "utf8").trim();
	} catch (err) {
		throw new ConfigError(`${name}_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
	}
	if (text === "") throw new ConfigError(`${name}_FILE: ${file} is empty`);
	return text;
}

/**
 * SECRETS_KEY, or SECRETS_KEY_FILE: a file outside the data dir (a mounted Kubernetes Secret), so
 * whoever copies the database does not get the key that seals it. A file that is missing or too
 * short stops the start naming the variable.
 */
function secretsKey(env: Env): string | null {
	const file = optional(env, "SECRETS_KEY_FILE");
	if (!file) return optional(env, "SECRETS_KEY");
	// Two sources could hold two keys: which one sealed the rows would be a guess.
	if (optional(env, "SECRETS_KEY")) throw new ConfigError("SECRETS_KEY and SECRETS_KEY_FILE are both set: keep one");
	const key = secretFromFile(env, "SECRETS_KEY")!;
	if (key.length < 16) throw new ConfigError(`SECRETS_KEY_FILE: ${file} holds ${key.length} characters, at least 16 are needed`);
	return key;
}

function busConfig(env: Env, transporter: string | null): BusConfig {
	const caFile = optional(env, "NATS_TLS_CA");
	const certFile = optional(env, "NATS_TLS_CERT");
	const keyFile = optional(env, "NATS_TLS_KEY");
	if (Boolean(certFile) !== Boolean(keyFile)) throw new ConfigError("NATS_TLS_CERT and NATS_TLS_KEY go together (a client certificate and its key)");
	const tlsWanted = Boolean(transporter?.startsWith("tls://") || caFile || certFile);
	return {
		user: optional(env, "NATS_USER"),
		password: secretFromFile(env, "NATS_PASSWORD"),
		tls: tlsWanted ? { caFile, certFile, keyFile } : null,
	};
}

function httpLimits(env: Env): HttpLimits {
	const requestTimeout = integer(env, "REQUEST_TIMEOUT", 30, 1, 3600);
	const headersTimeout = integer(env, "HEADERS_TIMEOUT", Math.min(10, requestTimeout), 1, 3600);
	if (headersTimeout > requestTimeout) throw new ConfigError(`HEADERS_TIMEOUT (${headersTimeout}) must not exceed REQUEST_TIMEOUT (${requestTimeout})`);
	return {
		requestTimeoutMs: requestTimeout * 1000,
		headersTimeoutMs: headersTimeout * 1000,
		maxConnections: integer(env, "MAX_CONNECTIONS", 4096, 1, 1_000_000),
		shutdownGraceMs: integer(env, "SHUTDOWN_GRACE", 10, 0, 3600) * 1000,
	};
}

function machineListener(env: Env, host: string): Config["machineListener"] {
	if (optional(env, "MACHINE_PORT") === null) return null;
	return { port: integer(env, "MACHINE_PORT", 0, 0, 65535), host: optional(env, "MACHINE_HOST") ?? host };
}

/** k8s/base/config.yaml ships REPLACE… placeholders: a deployment that kept one is refused, naming it. */
function refusePlaceholders(env: Env): void {
	for (const name of ["NATS_PASSWORD", "REDIS_URL"]) {
		if (/REPLACE/.test(env[name] ?? "")) throw new ConfigError(`${name} still holds the example placeholder of k8s/base/config.yaml: set a secret of your own`);
	}
}

/** A site's bus credential confines it to that site's subjects: a process for another site could only hang. */
function checkSiteCredential(config: Config): void {
	if (!config.transporter) return;
	const user = natsConnectionOptions(config).user as string | undefined;
	const site = config.distributorArtifactId;
	if (user?.startsWith("site-") && user !== busUserName(site)) {
		throw new ConfigError(site ? `NATS_USER ${user} is another site's credential than CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID "${site}" needs (${busUserName(site)})` : `NATS_USER ${user} is a site's credential: it needs CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID naming that site`);
	}
}

/** A network namespace's name, as `ip netns` takes it (it goes into an argument array, never a shell). */
function netnsName(env: Env, name: string): string | null {
	const value = optional(env, name);
	if (value && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(value)) throw new ConfigError(`${name} must be a network namespace name (letters, digits, '_', '.', '-')`);
	return value;
}

/** A comma list of host names or addresses, lower case, IPv6 without brackets. */
function hostList(raw: string | null): string[] {
	return (raw ?? "").split(",").map((h) => h.trim().toLowerCase().replace(/^\[|\]$/g, "")).filter(Boolean);
}

function machinesConfig(env: Env): Config["machines"] {
	const unknownBoot = optional(env, "MACHINES_UNKNOWN_BOOT") ?? "local";
	if (unknownBoot !== "local" && unknownBoot !== "menu" && unknownBoot !== "none") throw new ConfigError(`MACHINES_UNKNOWN_BOOT must be local, menu or none, got "${unknownBoot}"`);
	const anonymous = optional(env, "ANONYMOUS_REGISTRATION") ?? "true";
	if (anonymous !== "true" && anonymous !== "false") throw new ConfigError(`ANONYMOUS_REGISTRATION must be true or false, got "${anonymous}"`);
	return {
		unknownBoot,
		anonymousRegistration: anonymous === "true",
		provisionTimeoutMs: integer(env, "MACHINES_PROVISION_TIMEOUT", 1800, 1, 7 * 24 * 3600) * 1000,
		provisionConcurrency: integer(env, "MACHINES_PROVISION_CONCURRENCY", 8, 1, 256),
		discoveredMax: integer(env, "MACHINES_DISCOVERED_MAX", 10_000, 0, 10_000_000),
	};
}

/** Typed configuration from environment variables; throws ConfigError naming the bad variable. */
export function loadConfig(given: Env = process.env): Config {
	const env = declaredOnly(given);
	const port = integer(env, "PORT", 3000, 0, 65535);
	const dataDir = path.resolve(optional(env, "DATA_DIR") ?? "data");
	const logLevel = (optional(env, "LOG_LEVEL") ?? "info") as Config["logLevel"];
	if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}`);
	refusePlaceholders(env);
	const transporter = optional(env, "TRANSPORTER");
	if (transporter && !/^(nats|tls):\/\/[^,\s]+(,(nats|tls):\/\/[^,\s]+)*$/.test(transporter)) throw new ConfigError(`TRANSPORTER must be a nats:// or tls:// URL (comma-separated for several servers), got "${transporter.replace(/\/\/[^@/]*@/, "//…@")}"`);
	const host = optional(env, "HOST") ?? "0.0.0.0";
	const config: Config = {
		port,
		host,
		publicUrl: (optional(env, "PUBLIC_URL") ?? `http://localhost:${port}`).replace(/\/+$/, ""),
		dataDir,
		transporter,
		bus: busConfig(env, transporter),
		nodeId: optional(env, "NODE_ID") ?? undefined,
		databaseUrl: optional(env, "DATABASE_URL"),
		redisUrl: optional(env, "REDIS_URL"),
		store: storeConfig(env, dataDir),
		logLevel,
		reusePort: env.REUSE_PORT === "true",
		bodyLimit: integer(env, "BODY_LIMIT", 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
		http: httpLimits(env),
		machineListener: machineListener(env, host),
		auth: authMode(env),
		apiTokens: optional(env, "API_TOKENS"),
		secretsKey: secretsKey(env),
		distributorArtifactId: optional(env, "CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID"),
		distributorHttpPort: integer(env, "CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT", DEFAULT_HTTP_BOOT_PORT, 0, 65535),
		tunnels: tunnelConfig(env),
		allowLoopbackNodes: env.ALLOW_LOOPBACK_NODES === "true",
		registrationLimit: { burst: integer(env, "REGISTRATION_BURST", 120, 1, 1_000_000), perSecond: integer(env, "REGISTRATION_RATE", 2, 1, 100_000) },
		machines: machinesConfig(env),
		mirrorAllowedHosts: hostList(optional(env, "MIRROR_ALLOWED_HOSTS")),
		mirrorMaxFileBytes: integer(env, "MIRROR_MAX_FILE_SIZE", 4 * 1024 ** 3, 1, 2 ** 50),
		bootFileAllowedHosts: hostList(optional(env, "BOOT_FILE_ALLOWED_HOSTS")),
		ipxe: {
			sourceDir: optional(env, "IPXE_SOURCE_DIR"),
			treesDir: optional(env, "IPXE_TREES_DIR"),
			preparePlatforms: env.IPXE_PREPARE_PLATFORMS === undefined ? null : env.IPXE_PREPARE_PLATFORMS.split(/[\s,]+/).filter(Boolean),
			makeJobs: integer(env, "IPXE_MAKE_JOBS", os.availableParallelism(), 1, 256),
		},
		dnsNetns: netnsName(env, "CLUSTERPLATFORM_DNS_NETNS"),
	};
	checkSiteCredential(config);
	return config;
}
