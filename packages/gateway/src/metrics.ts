import { MetricReporters, type ServiceBroker } from "moleculer";
import { JOB_STATUSES } from "@clusterplatform/core";

/** A metric as `$node.metrics` (MetricRegistry.list) answers it, on any node. */
export interface MetricSnapshot {
	name: string;
	type: string;
	description?: string;
	unit?: string;
	labelNames?: string[];
	values: { labels?: Record<string, unknown>; [field: string]: unknown }[];
}

/** Builds by status, one gauge for every builder (an entity with status + progress columns). */
export const BUILDS_METRIC = "clusterplatform.builds";
/** BullMQ job counts per queue and state, for every service that owns a queue. */
export const QUEUE_METRIC = "clusterplatform.queue.jobs";

const NODE_CALL_TIMEOUT_MS = 5_000;

/**
 * Every node's metrics in one list, each value labelled with its nodeID. One family per metric
 * name across all nodes (the Prometheus text format allows a family only once).
 */
export function mergeNodeMetrics(byNode: { nodeID: string; metrics: MetricSnapshot[] }[]): MetricSnapshot[] {
	const families = new Map<string, MetricSnapshot>();
	for (const { nodeID, metrics } of byNode) {
		for (const metric of metrics) {
			const family = families.get(metric.name) ?? { ...metric, values: [] };
			families.set(metric.name, family);
			for (const value of metric.values) family.values.push({ ...value, labels: { ...value.labels, nodeID } });
		}
	}
	return [...families.values()];
}

/** What is used of Moleculer's Prometheus reporter: its renderer, which its types do not declare. */
interface PrometheusRenderer {
	registry: { store: unknown[] };
	generatePrometheusResponse(): string;
	formatMetricName(name: string): string;
	labelsToStr(labels: Record<string, unknown> | undefined, extra?: Record<string, unknown>): string;
}

/**
 * Prometheus text exposition (format 0.0.4). Counters, gauges and info metrics are rendered by
 * Moleculer's own Prometheus reporter. Its histograms also carry quantile, min, mean… samples,
 * which are not valid in a histogram family; those are rendered here as a plain histogram
 * (buckets, _sum, _count) — quantiles come from histogram_quantile() on the buckets.
 */
export function renderPrometheus(metrics: MetricSnapshot[]): string {
	const reporter = new MetricReporters.Prometheus({}) as unknown as PrometheusRenderer;
	// Only its renderer is used: no init(), so it opens no port of its own.
	const plain = metrics.filter((metric) => metric.type !== "histogram").flatMap(splitRates);
	reporter.registry = { store: plain.map((metric) => ({ ...metric, snapshot: () => metric.values })) };
	const histograms = metrics.filter((metric) => metric.type === "histogram" && metric.values.length > 0).map((metric) => renderHistogram(reporter, metric));
	return [reporter.generatePrometheusResponse(), ...histograms].join("\n");
}

/**
 * Moleculer puts a `<name>_rate` sample inside a counter's family, which a strict parser takes for
 * the start of another family. The rates become a gauge family of their own instead.
 */
function splitRates(metric: MetricSnapshot): MetricSnapshot[] {
	if (!metric.values.some((value) => value.rate !== undefined)) return [metric];
	const values = metric.values.map(({ rate: _rate, ...value }) => value);
	const rates = metric.values.filter((value) => value.rate !== undefined).map((value) => ({ labels: value.labels, value: value.rate }));
	return [
		{ ...metric, values },
		{ ...metric, name: `${metric.name}.rate`, type: "gauge", description: `${metric.description || metric.name} per second`, values: rates },
	];
}

function renderHistogram(reporter: PrometheusRenderer, metric: MetricSnapshot): string {
	const name = reporter.formatMetricName(metric.name).replace(/[.-]/g, "_");
	const lines = [`# HELP ${name} ${metric.description || metric.name}${metric.unit ? ` (${metric.unit})` : ""}`, `# TYPE ${name} histogram`];
	for (const item of metric.values as { labels?: Record<string, unknown>; buckets?: Record<string, number>; count?: number; sum?: number }[]) {
		for (const [le, count] of Object.entries(item.buckets ?? {})) lines.push(`${name}_bucket${reporter.labelsToStr(item.labels, { le })} ${count}`);
		lines.push(`${name}_bucket${reporter.labelsToStr(item.labels, { le: "+Inf" })} ${item.count ?? 0}`);
		lines.push(`${name}_sum${reporter.labelsToStr(item.labels)} ${item.sum ?? 0}`);
		lines.push(`${name}_count${reporter.labelsToStr(item.labels)} ${item.count ?? 0}`);
	}
	return `${lines.join("\n")}\n`;
}

function gauge(broker: ServiceBroker, name: string, description: string, labelNames: string[]): { set(value: number, labels: Record<string, string>): void } | null {
	return (broker.metrics.getMetric(name) ?? broker.metrics.register({ type: "gauge", name, description, labelNames })) as never;
}

interface ServiceInfo {
	name: string;
	settings?: { fields?: unknown };
	actions?: Record<string, unknown>;
}

/**
 * Refresh the provisioner's own gauges from the services that exist right now (on any node):
 * builders answer `count` per status, queue owners answer `queueCounts`. Gauges are registered on
 * first sight of such a service, so a deployment without builders shows none.
 */
export async function refreshProvisionerGauges(broker: ServiceBroker): Promise<void> {
	const services = broker.registry.getServiceList({ onlyAvailable: true, withActions: true }) as ServiceInfo[];
	const seen = new Set<string>();
	const unique = services.filter((s) => !seen.has(s.name) && seen.add(s.name));
	const tasks: Promise<void>[] = [];
	for (const service of unique) {
		const fields = Array.isArray(service.settings?.fields) ? (service.settings!.fields as string[]) : [];
		const actions = Object.keys(service.actions ?? {});
		if (fields.includes("status") && fields.includes("progress") && actions.includes(`${service.name}.count`)) {
			const builds = gauge(broker, BUILDS_METRIC, "Builds by status", ["builder", "status"]);
			for (const status of JOB_STATUSES) {
				tasks.push(
					broker
						.call(`${service.name}.count`, { query: { status } }, { timeout: NODE_CALL_TIMEOUT_MS })
						.then((count) => void builds?.set(Number(count), { builder: service.name, status })),
				);
			}
		}
		if (actions.includes(`${service.name}.queueCounts`)) {
			const jobs = gauge(broker, QUEUE_METRIC, "Queue jobs by state (waiting = queue depth)", ["queue", "state"]);
			tasks.push(
				broker.call(`${service.name}.queueCounts`, {}, { timeout: NODE_CALL_TIMEOUT_MS }).then((counts) => {
					for (const [state, count] of Object.entries(counts as Record<string, number>)) jobs?.set(count, { queue: service.name, state });
				}),
			);
		}
	}
	// A service that does not answer leaves its gauge at the last value; the scrape still succeeds.
	await Promise.allSettled(tasks);
}

/** Metrics of every reachable node; a node that does not answer in time is left out. */
export async function collectClusterMetrics(broker: ServiceBroker): Promise<MetricSnapshot[]> {
	const nodes = (broker.registry.getNodeList({ onlyAvailable: true, withServices: false }) as { id: string; local: boolean }[]).map((n) => n.id);
	const results = await Promise.allSettled(
		nodes.map(async (nodeID) => ({
			nodeID,
			metrics: (nodeID === broker.nodeID
				? broker.metrics.list({})
				: await broker.call("$node.metrics", {}, { nodeID, timeout: NODE_CALL_TIMEOUT_MS })) as MetricSnapshot[],
		})),
	);
	return mergeNodeMetrics(results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : [])));
}
