import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { configOf, storeFor } from "@clusterplatform/core";
import { artifactHandler } from "./artifacts";

/**
 * Who may call what. The one place an authorization policy plugs in: every /api call passes
 * through here with the request, before its action runs. Allows everything until a policy is set.
 */
export type AccessPolicy = (ctx: Context<unknown, Record<string, unknown>>, req: IncomingMessage, action: string) => Promise<void> | void;

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
				},
				bodyParsers: {
					json: { strict: false, limit: "4mb" },
					urlencoded: { extended: false, limit: "4mb" },
				},
				onBeforeCall(ctx: Context<unknown, Record<string, unknown>>, _route: unknown, req: IncomingMessage) {
					ctx.meta.accept = req.headers.accept;
				},
			},
		],
		log4XXResponses: false,
		logRequestParams: null,
		logResponseData: null,
	},
	actions: {
		health: {
			// Published for the explicit /api/health alias; it has no `rest`, so autoAliases skip it.
			handler(this: any) {
				return { status: "ok", nodeID: this.broker.nodeID, uptime: Math.round(process.uptime()) };
			},
		},
	},
	methods: {
		async authorize(this: any, ctx: Context<unknown, Record<string, unknown>>, route: any, req: IncomingMessage & { $action?: { name: string } }) {
			const policy: AccessPolicy | undefined = this.settings.accessPolicy;
			if (policy) await policy(ctx, req, req.$action?.name ?? "");
		},
		/**
		 * Rebuild the REST aliases now. moleculer-web does it 500 ms after services change; a launcher
		 * that has just started every local service calls this so the API answers at once.
		 */
		refreshAliases(this: any): void {
			for (const route of this.routes) if (route.opts.autoAliases) this.regenerateAutoAliases(route);
		},
		/** The port the server actually listens on (PORT=0 picks a free one, e.g. in tests). */
		listeningPort(this: any): number {
			return (this.server.address() as AddressInfo).port;
		},
	},
	created(this: any) {
		const config = configOf(this.broker);
		this.settings.port = config.port;
		this.settings.ip = config.host;
		const limit = `${config.bodyLimit}b`;
		const apiRoute = this.settings.routes[1];
		apiRoute.bodyParsers.json.limit = limit;
		apiRoute.bodyParsers.urlencoded.limit = limit;
		const serve = artifactHandler(() => storeFor(configOf(this.broker)));
		this.settings.routes[0].use = [(req: IncomingMessage, res: any, next: (err?: unknown) => void) => serve(req, res).catch(next)];
	},
};

export default GatewayService;
