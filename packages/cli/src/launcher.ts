import { ConfigError, createBroker, natsConnectionOptions, requireBinary, startPrivateRedis, type Config, type PrivateRedis } from "@clusterplatform/core";
import type { ServiceBroker } from "moleculer";
import { CATALOGUE } from "./catalogue";

export interface RunningProvisioner {
	broker: ServiceBroker;
	config: Config;
	/** The gateway's port, when this process runs the gateway. */
	port: number | null;
	/** The private redis-server, when this process started one. */
	redis: PrivateRedis | null;
	stop(): Promise<void>;
}

/** The services `start` runs: the named ones, or every default one. */
export function selectServices(names: readonly string[]): string[] {
	if (names.length === 0) return Object.keys(CATALOGUE).filter((name) => CATALOGUE[name]!.default);
	const unknown = names.filter((name) => !CATALOGUE[name]);
	if (unknown.length) throw new ConfigError(`unknown service ${unknown.join(", ")}; known: ${Object.keys(CATALOGUE).join(", ")}`);
	return [...new Set(names)];
}

/**
 * Start services in this process: one broker, the chosen services, and a private redis-server
 * when a queue needs one and REDIS_URL does not name another.
 */
export async function startProvisioner(config: Config, names: readonly string[] = []): Promise<RunningProvisioner> {
	const selected = selectServices(names);
	for (const name of selected) for (const [binary, pkg] of CATALOGUE[name]!.binaries ?? []) requireBinary(binary, pkg);
	const needsRedis = selected.some((name) => CATALOGUE[name]!.queue);
	const redis = needsRedis && !config.redisUrl ? await startPrivateRedis(config.dataDir) : null;
	const broker = createBroker(config);
	if (config.transporter && !natsConnectionOptions(config).user) {
		broker.logger.warn("the bus has no credential (NATS_USER/NATS_PASSWORD): whoever reaches this NATS can call every action; see docs/ARCHITECTURE.md, Threat model");
	}
	// The gateway opens its port last, once the services behind it are up: no request meets a
	// half-built route table.
	const backends = selected.filter((name) => name !== "gateway");
	for (const name of backends) broker.createService(CATALOGUE[name]!.schema);
	let api: { listeningPort(): number } | null = null;
	try {
		await broker.start();
		if (selected.includes("gateway")) {
			api = broker.createService(CATALOGUE.gateway!.schema) as unknown as { listeningPort(): number };
			await broker.waitForServices(["gateway"], 30_000);
		}
	} catch (err) {
		await broker.stop().catch(() => undefined);
		await redis?.stop();
		throw err;
	}
	const port = api ? api.listeningPort() : null;
	return {
		broker,
		config,
		port,
		redis,
		async stop() {
			await broker.stop();
			await redis?.stop();
		},
	};
}
