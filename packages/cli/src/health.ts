import os from "node:os";
import { ConfigError, createBroker, type Config } from "@clusterplatform/core";

/**
 * Health of a running provisioner process, for container probes (`clusterplatform health`).
 *
 * - In-process mode (no TRANSPORTER): the process serves the gateway, so its /api/health answers.
 * - Over NATS: most services listen on no port. The probe joins the transporter as a short-lived
 *   node and pings the process's node (NODE_ID; in a container without it, `<hostname>-1`, the
 *   default id of PID 1). A pong proves the process's event loop and its NATS link both work.
 */
export interface HealthResult {
	ok: boolean;
	detail: string;
}

/** The node id a process in this container uses: NODE_ID, or createBroker's default for PID 1. */
export function containerNodeId(config: Config): string {
	return config.nodeId ?? `${os.hostname()}-1`;
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
	const broker = createBroker({ ...config, logLevel: "fatal", nodeId: `${target}-probe-${process.pid}` }, { logger: false });
	const deadline = Date.now() + timeoutMs;
	try {
		await broker.start();
		// The target announces itself on the transporter; wait (bounded) until this node has heard it.
		while (!broker.registry.nodes.get(target)?.available) {
			if (Date.now() > deadline) return { ok: false, detail: `node ${target} not seen on ${config.transporter} within ${timeoutMs} ms` };
			await new Promise((resolve) => setTimeout(resolve, 100));
		}
		const pong = await broker.ping(target, Math.max(500, deadline - Date.now()));
		return pong ? { ok: true, detail: `node ${target} answered a ping in ${pong.elapsedTime} ms` } : { ok: false, detail: `node ${target} did not answer a ping` };
	} finally {
		await broker.stop().catch(() => undefined);
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
