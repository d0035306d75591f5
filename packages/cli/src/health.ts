import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "nats";
import { ConfigError, createBroker, natsConnectionOptions, nodeIdOf, type Config } from "@clusterplatform/core";

/**
 * Health of a running provisioner process, for container probes (`clusterplatform health`).
 *
 * - In-process mode (no TRANSPORTER): the process serves the gateway, so its /api/health answers.
 * - Over NATS: most services listen on no port. The probe sends the process's node (NODE_ID; in a
 *   container without it, `<hostname>-1`, the default id of PID 1) a Moleculer PING packet on NATS
 *   and waits for its PONG: proof that the process's event loop and its NATS link both work. The
 *   probe does not join the cluster as a node (no INFO/DISCONNECT traffic, no "node connected"
 *   logs and service-list churn on every node each time a probe runs); the packets are made with the
 *   broker's own serializer and topic names, so they follow the configured protocol.
 */
export interface HealthResult {
	ok: boolean;
	detail: string;
}

/** The node id a process in this container uses: NODE_ID, or createBroker's default for PID 1. */
export function containerNodeId(config: Config): string {
	return nodeIdOf(config, 1);
}

async function httpHealth(config: Config, timeoutMs: number): Promise<HealthResult> {
	const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
	const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}/api/health`;
	try {
		const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
		return { ok: response.ok, detail: `${url}: HTTP ${response.status}` };
	} catch (err) {
		return { ok: false, detail: `${url}: ${(err as Error).message}` };
	}
}

async function natsHealth(config: Config, target: string, timeoutMs: number): Promise<HealthResult> {
	const probeId = `${target}-probe-${process.pid}-${randomUUID().slice(0, 8)}`;
	// Never started: only its serializer, protocol version and topic names are used. `any`: those
	// are Moleculer internals (transit, serializer) its types do not declare.
	const broker = createBroker({ ...config, logLevel: "fatal" }, { logger: false, nodeID: probeId }) as any;
	const topic = (cmd: string, nodeID: string): string => broker.transit.tx.getTopicName(cmd, nodeID);
	let connection: NatsConnection;
	try {
		// The process's own bus credential: a site's probe may only subscribe within its site's subjects, as probeId is.
		connection = await connect({ ...natsConnectionOptions(config), timeout: timeoutMs, reconnect: false, name: probeId });
	} catch (err) {
		return { ok: false, detail: `cannot reach the bus (${natsConnectionOptions(config).servers}): ${(err as Error).message}` };
	}
	try {
		const id = randomUUID();
		const replies = connection.subscribe(topic("PONG", probeId), { timeout: timeoutMs });
		const sent = Date.now();
		connection.publish(topic("PING", target), broker.serializer.serialize({ ver: broker.PROTOCOL_VERSION, sender: probeId, time: sent, id }, "PING"));
		for await (const message of replies) {
			const pong = broker.serializer.deserialize(Buffer.from(message.data), "PONG") as { id?: string; sender?: string };
			if (pong.id === id) return { ok: true, detail: `node ${target} answered a ping in ${Date.now() - sent} ms` };
		}
		return { ok: false, detail: `node ${target} did not answer a ping` };
	} catch (err) {
		const timedOut = (err as { code?: string }).code === "TIMEOUT" || /timeout/i.test((err as Error).message);
		return { ok: false, detail: timedOut ? `node ${target} did not answer a ping on the bus within ${timeoutMs} ms` : `ping failed: ${(err as Error).message}` };
	} finally {
		await connection.close().catch(() => undefined);
	}
}

export async function checkHealth(config: Config, options: { nodeId?: string; timeoutMs?: number } = {}): Promise<HealthResult> {
	const timeoutMs = options.timeoutMs ?? 10_000;
	if (!config.transporter) {
		if (options.nodeId) throw new ConfigError("health: a node can only be pinged over a transporter (TRANSPORTER=nats://…)");
		return httpHealth(config, timeoutMs);
	}
	return natsHealth(config, options.nodeId ?? containerNodeId(config), timeoutMs);
}
