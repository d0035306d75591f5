import http from "node:http";
import type { AddressInfo } from "node:net";
import type { HttpLimits } from "@clusterplatform/core";
import { answerClientError } from "./client-errors";

/**
 * A deep accept queue: a LAN of hosts powering on at once connects faster than one event loop
 * accepts (Node's default of 511 drops SYNs, and each drop costs a client a 1 s retransmit).
 */
const BACKLOG = 4096;

/** How often Node looks for requests over their time (its default, 30 s, would let a 2 s bound slip to 32). */
const TIMEOUT_CHECK_MS = 1000;

/**
 * An HTTP server of the gateway with its bounds: a request (headers and body) that does not arrive
 * within REQUEST_TIMEOUT is answered 408 and its connection closed, so slowly dribbled bodies cannot
 * pile up; beyond MAX_CONNECTIONS new connections are closed at once. Parser errors and timeouts
 * get JSON answers (client-errors.ts).
 */
export function createListener(limits: HttpLimits): http.Server {
	const server = http.createServer({
		requestTimeout: limits.requestTimeoutMs,
		headersTimeout: limits.headersTimeoutMs,
		connectionsCheckingInterval: Math.min(TIMEOUT_CHECK_MS, limits.headersTimeoutMs),
	});
	server.maxConnections = limits.maxConnections;
	server.on("clientError", answerClientError);
	return server;
}

/** Listen with the deep backlog; with REUSE_PORT=true several gateway processes share the port and the kernel spreads connections. */
export function listen(server: http.Server, port: number, host: string, reusePort: boolean): Promise<AddressInfo> {
	return new Promise((resolve, reject) => {
		server.once("error", reject);
		// The prototype's listen: the gateway replaces the instance's own for moleculer-web's started().
		http.Server.prototype.listen.call(server, { port, host, backlog: BACKLOG, reusePort }, () => {
			server.off("error", reject);
			resolve(server.address() as AddressInfo);
		});
	});
}
