import { Errors, ServiceBroker, type BrokerOptions } from "moleculer";
import { BUS_NAMESPACE, confineSiteNodes, natsConnectionOptions, nodeIdOf, siteCallGuard } from "./bus";
import type { Config } from "./config";
import { bindConfig } from "./context";
import { InvalidInputError } from "./errors";

/**
 * Moleculer's parameter validator answers "Parameters validation error!"; clients are told which
 * field and why instead.
 */
function clarifyValidationError(err: unknown): never {
	if (err instanceof Errors.ValidationError && Array.isArray(err.data) && !(err instanceof InvalidInputError)) {
		const problems = (err.data as { field?: string; message?: string; type?: string; expected?: unknown; actual?: unknown }[]).flatMap((d) => {
			// $$strict: `actual` lists the unknown fields, `expected` the known ones.
			if (d.type === "objectStrict") {
				return String(d.actual).split(/,\s*/).map((field) => ({ field, message: `is not a known field (known: ${String(d.expected)})`, type: d.type }));
			}
			const message = d.type === "enumValue" ? `must be one of ${String(d.expected)}, got "${String(d.actual)}"` : (d.message ?? "is invalid").replace(/^The '([^']+)' field /, "");
			return [{ field: d.field ?? "(body)", message, type: d.type }];
		});
		throw new InvalidInputError(problems);
	}
	throw err;
}

/**
 * A broker wired from configuration: in-process transport unless TRANSPORTER names a NATS server.
 * Services find the configuration through configOf(broker).
 */
export function createBroker(config: Config, overrides: Partial<BrokerOptions> = {}): ServiceBroker {
	const broker = new ServiceBroker({
		namespace: BUS_NAMESPACE,
		nodeID: nodeIdOf(config),
		transporter: config.transporter ? { type: "NATS", options: natsConnectionOptions(config) } : undefined,
		middlewares: [siteCallGuard],
		// $node.options would hand the broker's options — the bus credential among them — to any caller.
		internalServices: { $node: { actions: { options: false } } } as unknown as BrokerOptions["internalServices"],
		logger: { type: "Console", options: { level: config.logLevel, formatter: "short", colors: false } },
		requestTimeout: 60_000,
		retryPolicy: { enabled: false },
		// Over NATS, a service that is not up yet is waited for rather than failing the first call.
		registry: { strategy: "RoundRobin", preferLocal: true },
		heartbeatInterval: 5,
		heartbeatTimeout: 15,
		validator: true,
		errorHandler(err) {
			clarifyValidationError(err);
		},
		// Collected in every process; the gateway serves them all at /api/metrics (Prometheus text), so no reporter port.
		metrics: { enabled: true, reporter: [] },
		...overrides,
	});
	bindConfig(broker, config);
	confineSiteNodes(broker);
	return broker;
}
