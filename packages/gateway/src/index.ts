import fs from "node:fs";
import type { IncomingMessage } from "node:http";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { CONSOLE_BUILD_HINT, CONSOLE_PATH, CONSOLE_ROOT, consoleBuilt } from "@clusterplatform/console";
import { BootEventRecorder, configOf, storeFor } from "@clusterplatform/core";
import { AccessControl, isMachinePath } from "./access";
import { artifactHandler } from "./artifacts";
import { recordBootSteps } from "./boot-trail";
import { consoleRequests } from "./console";
import { answerClientError } from "./client-errors";
import { jsonBody } from "./json-body";
import { MachineTextCache } from "./machine-cache";
import { collectClusterMetrics, refreshProvisionerGauges, renderPrometheus } from "./metrics";
import { buildOpenApiDocument, type RouteEntry } from "./openapi";

export * from "./access";
export * from "./metrics";
export * from "./openapi";

/** How long responses still running at shutdown (large downloads) may take before they are cut. */
const SHUTDOWN_GRACE_MS = 10_000;

/** The gateway package's version, for the OpenAPI document (read at runtime: src and dist alike). */
function packageVersion(): string {
	try {
		return JSON.parse(fs.readFileSync(path.join(__dirname, "..", "package.json"), "utf8")).version;
	} catch {
		return "0.0.0";
	}
}

export const GatewayService: ServiceSchema = {
	name: "gateway",
	mixins: [ApiGateway],
	settings: {
		path: "/api",
		// Cross-origin browser calls are refused unless an operator turns CORS on.
		cors: null,
		routes: [
			{
				path: "/artifacts",
				authorization: false,
				mappingPolicy: "restrict",
				aliases: {},
				use: [],
			},
			{
				path: "/",
				autoAliases: true,
				mappingPolicy: "restrict",
				mergeParams: true,
				authorization: true,
				aliases: {
					"GET /health": "gateway.health",
					"GET /openapi.json": "gateway.openapi",
					"GET /metrics": "gateway.metrics",
				},
				// JSON goes through jsonBody (json-body.ts), set up in created() with the configured limit.
				bodyParsers: {
					json: false,
					urlencoded: { extended: false, limit: "4mb" },
				},
				onBeforeCall(ctx: Context<unknown, Record<string, unknown>>, _route: unknown, req: IncomingMessage) {
					ctx.meta.accept = req.headers.accept;
				},
			},
		],
		log4XXResponses: false,
		// The route table is listed at debug level: at info it would fill the start-up log three times over.
		logRouteRegistration: "debug",
		logRequestParams: null,
		logResponseData: null,
	},
	actions: {
		// moleculer-web's own route list; /api/openapi.json describes the routes instead.
		listAliases: false,
		health: {
			// Published for the explicit /api/health alias; it has no `rest`, so autoAliases skip it.
			handler(this: any) {
				return { status: "ok", nodeID: this.broker.nodeID, uptime: Math.round(process.uptime()) };
			},
		},
		openapi: {
			// The API as OpenAPI 3, generated from the live route table (see openapi.ts).
			handler(this: any) {
				const config = configOf(this.broker);
				return buildOpenApiDocument(this.routeTable(), { version: packageVersion(), serverUrl: config.publicUrl, auth: config.auth !== "off" });
			},
		},
		metrics: {
			// Prometheus text format: every node's Moleculer metrics (labelled nodeID) plus builds and queues.
			async handler(this: any, ctx: Context<unknown, Record<string, unknown>>) {
				await refreshProvisionerGauges(this.broker);
				const text = renderPrometheus(await collectClusterMetrics(this.broker));
				ctx.meta.$responseType = "text/plain; version=0.0.4; charset=utf-8";
				return text;
			},
		},
	},
	methods: {
		/** What this gateway serves: one entry per alias, with the target action's parameter rules. */
		routeTable(this: any): RouteEntry[] {
			const actions = new Map<string, { params?: Record<string, unknown>; description?: string }>();
			for (const item of this.broker.registry.getActionList({ skipInternal: true }) as { name: string; action?: any }[]) {
				if (item.action && !actions.has(item.name)) actions.set(item.name, item.action);
			}
			return (this.aliases as { method: string; fullPath: string; action: string | null }[])
				.filter((alias) => typeof alias.action === "string")
				.map((alias) => ({
					method: alias.method,
					path: alias.fullPath,
					action: alias.action!,
					params: actions.get(alias.action!)?.params,
					description: actions.get(alias.action!)?.description,
					open: alias.method !== "*" && isMachinePath(alias.action!, alias.method),
				}));
		},
		/** Every /api call passes here before its action runs: bearer tokens, the machine path (access.ts). */
		authorize(this: any, ctx: Context<unknown, Record<string, unknown>>, _route: unknown, req: IncomingMessage & { $action?: { name: string } }) {
			this.access ??= new AccessControl(configOf(this.broker));
			ctx.meta.caller = this.access.authorize(req.$action?.name ?? "", req);
		},
		/** The port the server actually listens on (PORT=0 picks a free one, e.g. in tests). */
		listeningPort(this: any): number {
			return (this.server.address() as AddressInfo).port;
		},
	},
	events: {
		// moleculer-db broadcasts this from any node whenever a registry row changes.
		"cache.clean.*"(this: any, ctx: Context) {
			this.machineCache?.evict((ctx.eventName ?? "").slice("cache.clean.".length));
		},
	},
	created(this: any) {
		const config = configOf(this.broker);
		this.settings.port = config.port;
		this.settings.ip = config.host;
		const limit = `${config.bodyLimit}b`;
		const apiRoute = this.settings.routes[1];
		apiRoute.bodyParsers.urlencoded.limit = limit;
		apiRoute.use = [jsonBody(config.bodyLimit)];
		const serve = artifactHandler(() => storeFor(configOf(this.broker)));
		this.settings.routes[0].use = [(req: IncomingMessage, res: any, next: (err?: unknown) => void) => serve(req, res).catch(next)];
		// moleculer-web built its routes in its own created(), before the lines above: build them again.
		for (const route of this.settings.routes) this.removeRoute(route.path);
		for (const route of this.settings.routes) this.addRoute(route);
		this.machineCache = new MachineTextCache(this.broker);
		const [gatewayHandler] = this.server.listeners("request");
		this.server.removeAllListeners("request");
		this.bootEvents = new BootEventRecorder(this.broker);
		// The web console's static files (/console/) go first; they are not API routes.
		this.server.on("request", consoleRequests(CONSOLE_ROOT, recordBootSteps(this.bootEvents, this.machineCache.wrap(gatewayHandler))));
		this.server.on("clientError", answerClientError);
		// A deep accept queue: a LAN of hosts powering on at once connects faster than one event loop
		// accepts (Node's default of 511 drops SYNs, and each drop costs a client a 1 s retransmit).
		// With REUSE_PORT=true several gateway processes share the port and the kernel spreads connections.
		const listen = this.server.listen.bind(this.server);
		this.server.listen = (port: number, host: string, callback: () => void) => listen({ port, host, backlog: 4096, reusePort: config.reusePort }, callback);
	},
	started(this: any) {
		// Where a newcomer starts: the web console (consoleRequests in console.ts).
		const url = `${configOf(this.broker).publicUrl.replace(/\/+$/, "")}${CONSOLE_PATH}`;
		this.logger.info(consoleBuilt(CONSOLE_ROOT) ? `web console: ${url}` : `web console at ${url} is not built: ${CONSOLE_BUILD_HINT}`);
	},
	async stopped(this: any) {
		// moleculer-web's close waits for every response to end; a download whose client stopped
		// reading would hold the shutdown for ever. Those get a grace period, then their connections go.
		setTimeout(() => this.server.closeAllConnections(), SHUTDOWN_GRACE_MS).unref();
		// Boot steps still in the batch go out before the broker does.
		await this.bootEvents?.stop();
	},
};

export default GatewayService;
export * from "./insomnia";
