import fs from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway, { type ApiRouteSchema, type ApiSettingsSchema } from "moleculer-web";
import { CONSOLE_BUILD_HINT, CONSOLE_PATH, CONSOLE_ROOT, consoleBuilt } from "@clusterplatform/console";
import { BootEventRecorder, configOf, defineService, storeFor } from "@clusterplatform/core";
import { AccessControl } from "./access";
import { artifactHandler } from "./artifacts";
import { clientAddress, recordBootSteps } from "./boot-trail";
import { consoleRequests } from "./console";
import { requestBody } from "./json-body";
import { createListener, listen } from "./listeners";
import { MachineTextCache } from "./machine-cache";
import { isMachinePath } from "./machine-path";
import { collectClusterMetrics, refreshProvisionerGauges, renderPrometheus } from "./metrics";
import { buildOpenApiDocument, type RouteEntry } from "./openapi";
import { bodyLimitOf, requestGate } from "./request-gate";

export * from "./access";
export * from "./machine-path";
export * from "./metrics";
export * from "./openapi";

/** The gateway package's version, for the OpenAPI document (read at runtime: src and dist alike). */
function packageVersion(): string {
	try {
		return JSON.parse(fs.readFileSync(path.join(__dirname, "..", "package.json"), "utf8")).version;
	} catch {
		return "0.0.0";
	}
}

/** What moleculer-web (mixed in) provides that this service calls. */
interface ApiGatewayMethods {
	httpHandler(req: IncomingMessage, res: ServerResponse): void;
	sendError(req: IncomingMessage, res: ServerResponse, err: Error): void;
	addRoute(route: ApiRouteSchema): void;
	removeRoute(path: string | undefined): void;
}

interface GatewayMethods extends ApiGatewayMethods {
	routeTable(): RouteEntry[];
	listeningPort(): number;
	machineListeningPort(): number | null;
}

interface GatewayVars {
	server: Server;
	/** MACHINE_PORT's listener, when there is one. */
	machineServer?: Server;
	isHTTPS: boolean;
	access: AccessControl;
	machineCache?: MachineTextCache;
	bootEvents?: BootEventRecorder;
	/** moleculer-web's resolved aliases. */
	aliases: { method: string; fullPath: string; action: string | null }[];
}

type GatewaySettings = ApiSettingsSchema & { routes: ApiRouteSchema[] };

export const GatewayService: ServiceSchema = defineService<GatewayMethods, GatewayVars, GatewaySettings>({
	name: "gateway",
	mixins: [ApiGateway],
	settings: {
		path: "/api",
		// Cross-origin browser calls are refused unless an operator turns CORS on.
		cors: false,
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
				// JSON and form bodies go through requestBody (json-body.ts), set up in created() with the
				// limit the request gate chose for the caller.
				bodyParsers: false,
				onBeforeCall(ctx: Context<unknown, Record<string, unknown>>, _route: unknown, req: IncomingMessage) {
					ctx.meta.accept = req.headers.accept;
					// Who is asking, for limits per source (e.g. anonymous node registrations).
					ctx.meta.remoteAddress = clientAddress(req) ?? undefined;
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
			handler() {
				return { status: "ok", nodeID: this.broker.nodeID, uptime: Math.round(process.uptime()) };
			},
		},
		openapi: {
			// The API as OpenAPI 3, generated from the live route table (see openapi.ts).
			handler() {
				const config = configOf(this.broker);
				return buildOpenApiDocument(this.routeTable(), { version: packageVersion(), serverUrl: config.publicUrl, auth: config.auth !== "off" });
			},
		},
		metrics: {
			// Prometheus text format: every node's Moleculer metrics (labelled nodeID) plus builds and queues.
			async handler(ctx: Context<unknown, Record<string, unknown>>) {
				await refreshProvisionerGauges(this.broker);
				const text = renderPrometheus(await collectClusterMetrics(this.broker));
				ctx.meta.$responseType = "text/plain; version=0.0.4; charset=utf-8";
				return text;
			},
		},
	},
	methods: {
		/** What this gateway serves: one entry per alias, with the target action's parameter rules. */
		routeTable(): RouteEntry[] {
			const actions = new Map<string, { params?: Record<string, unknown>; description?: string }>();
			for (const item of this.broker.registry.getActionList({ skipInternal: true }) as { name: string; action?: { params?: Record<string, unknown>; description?: string } }[]) {
				if (item.action && !actions.has(item.name)) actions.set(item.name, item.action);
			}
			return this.aliases
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
		/**
		 * Every /api call passes here before its action runs, once routed: the request gate already
		 * checked the caller before the body was read; this checks again with the action the route
		 * resolved to (a token-less call must be that machine-path row's very action).
		 */
		authorize(ctx: Context<unknown, Record<string, unknown>>, _route: unknown, req: IncomingMessage & { $action?: { name: string } }) {
			ctx.meta.caller = this.access.authorize(req, req.$action?.name ?? "");
		},
		/** The port the server actually listens on (PORT=0 picks a free one, e.g. in tests). */
		listeningPort(): number {
			return (this.server.address() as AddressInfo).port;
		},
		/** The machine listener's port (MACHINE_PORT), or null without one. */
		machineListeningPort(): number | null {
			return this.machineServer?.listening ? (this.machineServer.address() as AddressInfo).port : null;
		},
		/** Replaces moleculer-web's: our listeners carry request timeouts and a connection cap (listeners.ts). */
		createServer() {
			const config = configOf(this.broker);
			this.server = createListener(config.http);
			this.isHTTPS = false;
			if (config.machineListener) this.machineServer = createListener(config.http);
		},
	},
	events: {
		// moleculer-db broadcasts this from any node whenever a registry row changes.
		"cache.clean.*"(ctx: Context) {
			this.machineCache?.evict((ctx.eventName ?? "").slice("cache.clean.".length));
		},
		// While the bus was down, cache.clean events went by: whatever was answered from memory may be stale.
		"$transporter.connected"() {
			this.machineCache?.evictAll();
		},
	},
	created() {
		const config = configOf(this.broker);
		this.settings.port = config.port;
		this.settings.ip = config.host;
		this.access = new AccessControl(config);
		this.settings.routes[1]!.use = [requestBody((req) => bodyLimitOf(req, config.bodyLimit))];
		const serve = artifactHandler(() => storeFor(configOf(this.broker)));
		this.settings.routes[0]!.use = [(req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => serve(req, res).catch(next)];
		// moleculer-web built its routes in its own created(), before the lines above: build them again.
		for (const route of this.settings.routes) this.removeRoute(route.path);
		for (const route of this.settings.routes) this.addRoute(route);
		// Behind the gate (who may ask, how much body): boot steps, the boot-storm cache, then moleculer-web.
		const bootEvents = (this.bootEvents = new BootEventRecorder(this.broker));
		this.machineCache = new MachineTextCache(this.broker, { bootEvents });
		const api = recordBootSteps(bootEvents, this.machineCache.wrap((req: IncomingMessage, res: ServerResponse) => this.httpHandler(req, res)));
		const gate = (machineOnly: boolean) => requestGate({ access: this.access, bodyLimit: config.bodyLimit, machineOnly, sendError: (req, res, err) => this.sendError(req, res, err) }, api);
		// The web console's static files (/console/) go first; they are not API routes.
		this.server.on("request", consoleRequests(CONSOLE_ROOT, gate(false)));
		// MACHINE_PORT: the machine path alone (no console, no admin API), for boot LANs.
		this.machineServer?.on("request", gate(true));
		this.machineServer?.on("error", (err: Error) => this.logger.error(`machine listener (MACHINE_PORT): ${err.message}`));
		// moleculer-web's started() calls listen(port, host, callback): ours adds the backlog and REUSE_PORT.
		// (Node's listen has many overloads; this replacement serves only that one call.)
		const server = this.server;
		server.listen = ((port: number, host: string, callback: (err?: Error) => void) => {
			listen(server, port, host, config.reusePort).then(() => callback(), callback);
			return server;
		}) as Server["listen"];
	},
	async started() {
		const config = configOf(this.broker);
		if (this.machineServer) {
			const { address, port } = await listen(this.machineServer, config.machineListener!.port, config.machineListener!.host, config.reusePort);
			this.logger.info(`machine path (scripts, kickstarts, public keys, registration, artifacts, health) only: http://${address}:${port}/api`);
		}
		// Where a newcomer starts: the web console (consoleRequests in console.ts).
		const url = `${config.publicUrl.replace(/\/+$/, "")}${CONSOLE_PATH}`;
		this.logger.info(consoleBuilt(CONSOLE_ROOT) ? `web console: ${url}` : `web console at ${url} is not built: ${CONSOLE_BUILD_HINT}`);
	},
	async stopped() {
		// moleculer-web's close waits for every response to end; a download whose client stopped
		// reading would hold the shutdown for ever. Those get a grace period (SHUTDOWN_GRACE), then their connections go.
		const { shutdownGraceMs } = configOf(this.broker).http;
		for (const server of [this.server, this.machineServer]) setTimeout(() => server?.closeAllConnections(), shutdownGraceMs).unref();
		const machineServer = this.machineServer;
		const machineClosed = machineServer?.listening ? new Promise((resolve) => machineServer.close(resolve)) : null;
		// Boot steps still in the batch go out before the broker does.
		await this.machineCache?.stop();
		await this.bootEvents?.stop();
		await machineClosed;
	},
});

export default GatewayService;
export * from "./insomnia";
