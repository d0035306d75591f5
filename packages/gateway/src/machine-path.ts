import type { IncomingMessage } from "node:http";
import type { BootEventKind } from "@clusterplatform/core";

/**
 * One request of the machine path: what booting hosts and installed nodes call. They cannot send
 * headers, so these need no token — and nothing else is open.
 */
export interface MachineRoute {
	/** The action it runs; null for artifact downloads (a plain read-only handler, no action). */
	action: string | null;
	methods: readonly string[];
	/** Path below /api: ":id" is a row id (1-16 digits, no leading zero), ":mac" a MAC (one segment of at most 32 characters, checked by the action), "*" the rest of the path. */
	path: string;
	/** Raw text answered from memory in a boot storm (machine-cache.ts). */
	cacheable: boolean;
	/** The boot timeline's step, recorded when a host without a token is answered 2xx (boot-trail.ts). */
	bootStep: BootEventKind | null;
	/** Bytes of body a caller without a token may send (a GET sends none). */
	bodyLimit: number;
}

/** A node's registration carries a few query fields; 16 KiB is generous and cheap to read. */
const REGISTRATION_BODY_LIMIT = 16 * 1024;

/**
 * The machine path, declared once. Authorization (access.ts, request-gate.ts), the boot-storm cache,
 * the boot timeline, the machine listener (MACHINE_PORT) and OpenAPI's security all read this table.
 * Everything here only reads, except a node registering itself.
 */
export const MACHINE_ROUTES: readonly MachineRoute[] = [
	{ action: "mainscripts.get", methods: ["GET"], path: "/mainscripts/:id", cacheable: true, bootStep: "script", bodyLimit: 0 },
	{ action: "subscripts.get", methods: ["GET"], path: "/subscripts/:id", cacheable: true, bootStep: "script", bodyLimit: 0 },
	{ action: "kickstarts.get", methods: ["GET"], path: "/kickstarts/:id", cacheable: true, bootStep: "kickstart", bodyLimit: 0 },
	{ action: "prebootscripts.get", methods: ["GET"], path: "/prebootscripts/:id", cacheable: true, bootStep: "script", bodyLimit: 0 },
	{ action: "postbootscripts.get", methods: ["GET"], path: "/postbootscripts/:id", cacheable: true, bootStep: "script", bodyLimit: 0 },
	// Public keys only: the sshkeys service refuses private ones to a caller without a token.
	{ action: "sshkeys.get", methods: ["GET"], path: "/sshkeys/:id", cacheable: false, bootStep: null, bodyLimit: 0 },
	// The post-boot script's curl: POST /api/localnodes?ip=…&artifactId=…
	{ action: "localnodes.create", methods: ["POST"], path: "/localnodes", cacheable: false, bootStep: "registered", bodyLimit: REGISTRATION_BODY_LIMIT },
	{ action: "gateway.health", methods: ["GET"], path: "/health", cacheable: false, bootStep: null, bodyLimit: 0 },
	// Machines (packages/machines): every machine's embedded script chains /api/boot?mac=…; its profile's
	// scripts follow by MAC. Query only, validated by the actions; the machines service records the step
	// with the MAC (so no boot step here).
	{ action: "machines.boot", methods: ["GET"], path: "/boot", cacheable: false, bootStep: null, bodyLimit: 0 },
	{ action: "machines.bootKickstart", methods: ["GET"], path: "/boot/:mac/kickstart", cacheable: false, bootStep: null, bodyLimit: 0 },
	{ action: "machines.bootPreboot", methods: ["GET"], path: "/boot/:mac/preboot", cacheable: false, bootStep: null, bodyLimit: 0 },
	{ action: "machines.bootPostboot", methods: ["GET"], path: "/boot/:mac/postboot", cacheable: false, bootStep: null, bodyLimit: 0 },
	// Built artifacts of the file store (artifacts.ts): read-only, keys checked before the file system.
	{ action: null, methods: ["GET", "HEAD"], path: "/artifacts/*", cacheable: false, bootStep: "artifact", bodyLimit: 0 },
];

/** Where the API lives on the gateway's listeners (moleculer-web's `path`). */
export const API_PREFIX = "/api";

/** "/mainscripts/:id" → a RegExp for the URL path (query excluded); an optional trailing slash as moleculer-web allows. */
function shapeOf(route: MachineRoute): RegExp {
	const segments = route.path.split("/").map((segment) => {
		if (segment === ":id") return "([1-9][0-9]{0,15})";
		// One short segment; the action checks it is a MAC (422 naming it otherwise).
		if (segment === ":mac") return "([^/]{1,32})";
		if (segment === "*") return "(.+)";
		return segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
	});
	return new RegExp(`^${API_PREFIX}${segments.join("/")}${route.path.endsWith("*") ? "" : "/?"}$`);
}

const SHAPES = MACHINE_ROUTES.map((route) => ({ route, shape: shapeOf(route) }));

export interface MachineRequest {
	route: MachineRoute;
	/** The URL's path without the query. */
	pathname: string;
	/** The row id of a ":id" route, the MAC of a ":mac" one, or the artifact key (still percent-encoded) of "*". */
	param: string | null;
	/** True when the URL carries a query string. */
	hasQuery: boolean;
}

/** The machine-path row a request's method and URL match, or null. */
export function machineRequestOf(method: string | undefined, url: string | undefined): MachineRequest | null {
	const raw = url ?? "";
	const queryAt = raw.indexOf("?");
	const pathname = queryAt === -1 ? raw : raw.slice(0, queryAt);
	for (const { route, shape } of SHAPES) {
		if (!route.methods.includes(method ?? "GET")) continue;
		const match = shape.exec(pathname);
		if (match) return { route, pathname, param: match[1] ?? null, hasQuery: queryAt !== -1 };
	}
	return null;
}

const MATCHED = Symbol("machineRequest");

/**
 * The request's machine-path row; `originalUrl` because moleculer-web rewrites `url` while routing.
 * Kept on the request: the gate, the boot trail, the cache and authorize all ask.
 */
export function machineRequest(req: IncomingMessage & { originalUrl?: string; [MATCHED]?: { url: string; match: MachineRequest | null } }): MachineRequest | null {
	const url = req.originalUrl ?? req.url ?? "";
	if (req[MATCHED]?.url !== url) req[MATCHED] = { url, match: machineRequestOf(req.method, url) };
	return req[MATCHED].match;
}

/** Action → methods callable without a token (derived from MACHINE_ROUTES, for OpenAPI and tests). */
export const MACHINE_PATH: Readonly<Record<string, readonly string[]>> = Object.fromEntries(
	MACHINE_ROUTES.filter((route) => route.action !== null).map((route) => [route.action!, route.methods]),
);

export function isMachinePath(action: string, method: string): boolean {
	return MACHINE_PATH[action]?.includes(method) ?? false;
}
