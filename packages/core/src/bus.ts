import os from "node:os";
import bcrypt from "bcryptjs";
import { Errors, type Middleware, type ServiceBroker } from "moleculer";
import type { Config } from "./config";

/**
 * Who may do what on the service bus (NATS). The bus has two kinds of members:
 *
 * - cluster processes (gateway, registries, managers, builder workers) hold the cluster credential
 *   and may publish and subscribe anything;
 * - site processes (distributor worker, dns-worker, tunnel-client on a LAN) hold their site's
 *   credential. Their node IDs are `site.<site>.<name>` (site-node-ids below), and NATS lets a site
 *   credential subscribe only to its own sites' node subjects and the discovery broadcasts, and publish
 *   no request at all: a site answers the cluster's calls and emits events, it never calls an action.
 *
 * Moleculer answers a request on `RES.<sender>`, so a request or event that claims another node's ID
 * gets its answer delivered to that node, never to the caller: what a site credential can read is
 * what is addressed to its own nodes. The cluster hands a site's secrets (scripts, keys, tunnel
 * passwords) only to nodes whose ID names that site (`mayActForSite`).
 */

/** Moleculer's NATS subjects: MOL-<namespace>.<packet type>[.<target node>]. */
export const BUS_NAMESPACE = "clusterplatform";
const SUBJECT_PREFIX = `MOL-${BUS_NAMESPACE}`;

const SITE_NODE = /^site\.([^.\s*>]+)\.([^.\s*>]+)$/;

/** A site tag as one NATS subject token ('.' separates tokens; '~' never appears in a site tag). */
function siteToken(artifactId: string): string {
	return artifactId.replaceAll(".", "~");
}

/** The node ID of a site process: `site.<site>.<name>`, one subject token each. */
export function siteNodeId(artifactId: string, name: string): string {
	return `site.${siteToken(artifactId)}.${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
}

/** The site a node ID names, or null for a cluster node. */
export function siteOfNode(nodeID: string): string | null {
	const match = SITE_NODE.exec(nodeID);
	return match ? match[1]!.replaceAll("~", ".") : null;
}

/** Whether a node may receive what belongs to a site: this process itself, or a node of that site. */
export function mayActForSite(broker: ServiceBroker, nodeID: string, artifactId: string): boolean {
	return nodeID === broker.nodeID || siteOfNode(nodeID) === artifactId;
}

/** This process's node ID: NODE_ID (or host-pid), inside its site's namespace when it runs for a site. */
export function nodeIdOf(config: Pick<Config, "nodeId" | "distributorArtifactId">, pid: number = process.pid): string {
	const name = config.nodeId ?? `${os.hostname()}-${pid}`;
	if (!config.distributorArtifactId) return name;
	return siteOfNode(name) === config.distributorArtifactId ? name : siteNodeId(config.distributorArtifactId, name);
}

export interface NatsPermissions {
	publish: { allow: string[] };
	subscribe: { allow: string[] };
}

/** Everything: the cluster's processes. */
export const CLUSTER_PERMISSIONS: NatsPermissions = { publish: { allow: [">"] }, subscribe: { allow: [">"] } };

/** One site's processes: discovery, answers and events; requests only to its own nodes' subjects. */
export function sitePermissions(artifactId: string): NatsPermissions {
	const broadcasts = ["DISCOVER", "INFO", "HEARTBEAT", "DISCONNECT", "PING"].map((cmd) => `${SUBJECT_PREFIX}.${cmd}`);
	return {
		publish: { allow: [...broadcasts, ...["DISCOVER", "INFO", "PING", "PONG", "RES", "EVENT"].map((cmd) => `${SUBJECT_PREFIX}.${cmd}.>`)] },
		subscribe: { allow: [...broadcasts, `${SUBJECT_PREFIX}.*.site.${siteToken(artifactId)}.>`] },
	};
}

/** The NATS user name of a site's credential, or of the cluster's. */
export function busUserName(artifactId: string | null): string {
	return artifactId === null ? "cluster" : `site-${artifactId}`;
}

export interface BusUser {
	user: string;
	/** bcrypt hash: nats-server compares against it, the clear password is never stored. */
	passwordHash: string;
	permissions: NatsPermissions;
}

/** A bus user (cluster, or a site's) with a hashed password, for nats-server's authorization block. */
export function busUser(artifactId: string | null, password: string): BusUser {
	return {
		user: busUserName(artifactId),
		passwordHash: bcrypt.hashSync(password, 11),
		permissions: artifactId === null ? CLUSTER_PERMISSIONS : sitePermissions(artifactId),
	};
}

/** One entry of nats-server's `authorization { users = [ … ] }` (its config syntax takes JSON values). */
export function natsUserEntry(user: BusUser): string {
	return JSON.stringify({ user: user.user, password: user.passwordHash, permissions: user.permissions });
}

/** What the nats client connects with: servers, the credential, TLS. Nothing here is ever logged. */
export function natsConnectionOptions(config: Pick<Config, "transporter" | "bus">): Record<string, unknown> {
	const urls = config.transporter!.split(",").map((u) => new URL(u.trim()));
	const fromUrl = urls.find((u) => u.username);
	const options: Record<string, unknown> = {
		servers: urls.map((u) => u.host),
		user: config.bus.user ?? (fromUrl ? decodeURIComponent(fromUrl.username) : undefined),
		pass: config.bus.password ?? (fromUrl ? decodeURIComponent(fromUrl.password) : undefined),
	};
	const tls = config.bus.tls;
	if (tls) {
		// The nats client reads the files itself; unset ones fall back to the system's CAs / no client certificate.
		const ca = tls.caFile?.startsWith("-----BEGIN") ? { ca: tls.caFile } : tls.caFile ? { caFile: tls.caFile } : {};
		options.tls = { ...ca, ...(tls.certFile ? { certFile: tls.certFile, keyFile: tls.keyFile } : {}) };
	}
	return options;
}

/** What a site's node may offer the cluster: its workers (and Moleculer's own $node). */
export const SITE_SERVICES: readonly string[] = ["$node", "distributor-worker", "dns-worker", "tunnel-client"];

interface NodeInfo {
	sender?: string;
	services?: { name?: string; events?: unknown }[];
}

/**
 * A site's node is taken at its word only for the site workers: a node that advertises any other
 * service (sshkeys, distributors, localnodes…) would otherwise be sent a share of the cluster's
 * calls to it — another site's keys and scripts among them — and no listener of a site's is sent the
 * cluster's events. Applied to every INFO packet before Moleculer's registry sees it.
 */
export function confineSiteNodes(broker: ServiceBroker): void {
	ignoreForgedSelf(broker);
	const registry = broker.registry as unknown as { processNodeInfo(payload: NodeInfo): unknown };
	const processNodeInfo = registry.processNodeInfo.bind(registry);
	registry.processNodeInfo = (payload: NodeInfo) => {
		if (payload.sender && siteOfNode(payload.sender) !== null && Array.isArray(payload.services)) {
			payload.services = payload.services.filter((service) => SITE_SERVICES.includes(service.name ?? "")).map((service) => ({ ...service, events: {} }));
		}
		return processNodeInfo(payload);
	};
}

/**
 * Moleculer stops a process (broker.fatal, exit 1) that sees an INFO packet in its own node ID from
 * another instance — a duplicate NODE_ID, or a forgery that anyone who may publish INFO can send.
 * Here it is logged and dropped: one site's credential must not be able to stop the cluster.
 */
function ignoreForgedSelf(broker: ServiceBroker): void {
	const transporter = (broker as unknown as { transit?: { tx: { messageHandler(cmd: string, packet: { payload?: { sender?: string; instanceID?: string } }): unknown } } }).transit?.tx;
	if (!transporter) return;
	const handle = transporter.messageHandler.bind(transporter);
	let warned = false;
	transporter.messageHandler = (cmd, packet) => {
		const payload = packet?.payload;
		if (cmd === "INFO" && payload?.sender === broker.nodeID && payload.instanceID !== broker.instanceID) {
			if (!warned) broker.logger.error(`another process announces this node's ID ${broker.nodeID} (a duplicate NODE_ID, or a forgery): ignored`);
			warned = true;
			return Promise.resolve(false);
		}
		return handle(cmd, packet);
	};
}

/** What the guard reads of a call's context. */
interface GuardedContext {
	nodeID?: string | null;
	broker?: { nodeID: string };
	action?: { name?: string };
}

/**
 * Defence in depth behind NATS permissions (and the whole story on a bus without them): a request
 * from a site node reaches no action of this process. Sites answer calls and emit events; they
 * never call. Local calls (one process running everything) are not remote.
 */
export const siteCallGuard: Middleware = {
	name: "SiteCallGuard",
	localAction(this: ServiceBroker, next: (ctx: GuardedContext) => unknown) {
		return function guarded(this: unknown, ctx: GuardedContext) {
			const caller = ctx.nodeID;
			if (caller && caller !== ctx.broker?.nodeID && siteOfNode(caller) !== null) {
				throw new Errors.MoleculerClientError(`site node ${caller} may not call ${ctx.action?.name ?? "actions"}: sites answer the cluster, they do not call it`, 403, "SITE_MAY_NOT_CALL", { nodeID: caller });
			}
			return next(ctx);
		};
	},
} as unknown as Middleware;
