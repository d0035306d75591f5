#!/usr/bin/env node
import { ConfigError, loadConfig } from "@clusterplatform/core";
import { CATALOGUE } from "./catalogue";
import { startProvisioner } from "./launcher";

const USAGE = `Usage: clusterplatform start [service …]

Runs the named services (default: all of them) in one process on the configuration in the
environment: PORT (3000), DATA_DIR (./data), TRANSPORTER (in-process), DATABASE_URL (SQLite),
REDIS_URL (a private redis-server), S3_ENDPOINT… (files under the data dir).

Services: ${Object.keys(CATALOGUE).join(", ")}`;

async function start(names: string[]): Promise<void> {
	const config = loadConfig();
	const provisioner = await startProvisioner(config, names);
	if (provisioner.port !== null) console.log(`clusterplatform: API at ${config.publicUrl}/api (listening on ${config.host}:${provisioner.port})`);
	let stopping = false;
	const stop = async (signal: string) => {
		if (stopping) return;
		stopping = true;
		console.log(`clusterplatform: ${signal}, stopping`);
		await provisioner.stop();
		process.exit(0);
	};
	process.on("SIGINT", () => void stop("SIGINT"));
	process.on("SIGTERM", () => void stop("SIGTERM"));
}

async function main(argv: string[]): Promise<void> {
	const [command, ...rest] = argv;
	switch (command) {
		case "start":
			return start(rest);
		case undefined:
		case "help":
		case "--help":
		case "-h":
			console.log(USAGE);
			return;
		default:
			throw new ConfigError(`unknown command "${command}"\n${USAGE}`);
	}
}

main(process.argv.slice(2)).catch((err: Error) => {
	// Configuration problems are the operator's to fix: one line, no stack.
	console.error(err instanceof ConfigError ? `clusterplatform: ${err.message}` : err);
	process.exit(err instanceof ConfigError ? 2 : 1);
});
