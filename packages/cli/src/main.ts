#!/usr/bin/env node
// Client commands load only ./client (fast, no services); the service modules are loaded on demand.
import type { Config } from "@clusterplatform/core";
import { CLIENT_USAGE, isClientCommand, runClient } from "./client";

// require(), not import(): these are CommonJS modules loaded on first use.
const core = (): typeof import("@clusterplatform/core") => require("@clusterplatform/core");
const catalogue = (): typeof import("./catalogue") => require("./catalogue");
const token = (): typeof import("./token") => require("./token");
const loadConfig = (): Config => core().loadConfig();
const configError = (message: string) => new (core().ConfigError)(message);

const usage = () => `Usage: clusterplatform start [service …]
       clusterplatform distributor
       clusterplatform health [node-id] [--timeout=ms]
       clusterplatform token create|entry [--name=N] [--read-only] [token]
       clusterplatform bus user [--site=<artifactId>] --file=<nats users file>

Runs the named services (default: all of them) in one process on the configuration in the
environment: PORT (3000), DATA_DIR (./data), TRANSPORTER (in-process), DATABASE_URL (SQLite),
REDIS_URL (a private redis-server), S3_ENDPOINT… (files under the data dir).

\`distributor\` runs only a site's distributor worker (dnsmasq proxy DHCP + TFTP, SSH to the
site's nodes) on the LAN it serves; it needs TRANSPORTER (nats://…) and
CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID (the site tag); on a secured bus also NATS_USER and
NATS_PASSWORD (its site's credential, from \`bus user --site=…\`) and NATS_TLS_CA.

Services: ${Object.keys(catalogue().CATALOGUE).join(", ")}

${CLIENT_USAGE}`;

/** How long a stop may take before the process exits regardless (the gateway alone may hold 10 s for downloads). */
const STOP_DEADLINE_MS = 15_000;

async function start(names: string[]): Promise<void> {
	const config = loadConfig();
	const { ensureFirstToken } = token();
	const firstToken = names.length === 0 || names.includes("gateway") ? ensureFirstToken(config) : null;
	const provisioner = await (require("./launcher") as typeof import("./launcher")).startProvisioner(config, names);
	if (firstToken) console.log(`clusterplatform: admin API token (shown once; its hash is kept in ${config.dataDir}/auth/tokens): ${firstToken}`);
	if (provisioner.port !== null) console.log(`clusterplatform: API at ${config.publicUrl}/api (listening on ${config.host}:${provisioner.port})`);
	let stopping = false;
	const stop = async (signal: string) => {
		// A second signal (Ctrl-C again) does not wait for the first stop.
		if (stopping) process.exit(1);
		stopping = true;
		console.log(`clusterplatform: ${signal}, stopping`);
		// Bounded: services whose Redis, NATS or database is already gone may wait on reconnects for ever.
		setTimeout(() => {
			console.error(`clusterplatform: not stopped within ${STOP_DEADLINE_MS / 1000} s, exiting anyway`);
			process.exit(1);
		}, STOP_DEADLINE_MS).unref();
		await provisioner.stop();
		process.exit(0);
	};
	process.on("SIGINT", () => void stop("SIGINT"));
	process.on("SIGTERM", () => void stop("SIGTERM"));
}

/** A distributor alone in its process is useless: it has to reach the manager over NATS. */
async function distributor(): Promise<void> {
	const config = loadConfig();
	if (!config.transporter) throw configError("distributor needs TRANSPORTER=nats://… or tls://… (the provisioner's NATS) to reach the distributors manager");
	if (!config.distributorArtifactId) throw configError("distributor needs CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID (the site tag, e.g. felicitas.pojtinger.swabia.sol)");
	return start(["distributor-worker"]);
}

/** Container probe: exit 0 when this container's provisioner process answers (see health.ts). */
async function health(args: string[]): Promise<void> {
	const timeout = args.find((a) => a.startsWith("--timeout="));
	const timeoutMs = timeout ? Number(timeout.slice("--timeout=".length)) : undefined;
	if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs > 0)) throw configError("health: --timeout=<milliseconds> must be a positive integer");
	const { checkHealth } = require("./health") as typeof import("./health");
	const result = await checkHealth(loadConfig(), { nodeId: args.find((a) => !a.startsWith("--")), timeoutMs });
	console.log(`clusterplatform health: ${result.ok ? "ok" : "FAILED"}: ${result.detail}`);
	process.exit(result.ok ? 0 : 1);
}

async function main(argv: string[]): Promise<void> {
	if (isClientCommand(argv)) {
		// exitCode, not exit(): stdout piped to another program is flushed first.
		process.exitCode = await runClient(argv);
		return;
	}
	const [command, ...rest] = argv;
	switch (command) {
		case "start":
			return start(rest);
		case "distributor":
			return distributor();
		case "health":
			return health(rest);
		case "token":
			console.log(token().tokenCommand(loadConfig(), rest));
			return;
		case "bus":
			console.log((require("./bus") as typeof import("./bus")).busCommand(rest));
			return;
		case undefined:
		case "help":
		case "--help":
		case "-h":
			console.log(usage());
			return;
		default:
			throw configError(`unknown command "${command}"\n${usage()}`);
	}
}

main(process.argv.slice(2)).catch(async (err: Error) => {
	// Configuration problems are the operator's to fix: one line, no stack.
	const isConfigError = err instanceof core().ConfigError;
	console.error(isConfigError ? `clusterplatform: ${err.message}` : err);
	process.exit(isConfigError ? 2 : 1);
});
