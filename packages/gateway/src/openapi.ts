/**
 * OpenAPI 3 description of the API, generated from what the gateway actually serves: its aliases
 * (the route table moleculer-web builds from each action's `rest`) and each action's parameter
 * rules (fastest-validator), so the document cannot drift from the code.
 */

import { machineRequestOf } from "./machine-path";

/** One served route: an HTTP method and full path bound to an action. */
export interface RouteEntry {
	method: string;
	/** moleculer-web style: /api/mainscripts/:id */
	path: string;
	action: string;
	/** The action's fastest-validator rules, when the registry knows them. */
	params?: Record<string, unknown>;
	/** Service description or the action's own, for the summary. */
	description?: string;
	/** Callable without a token (the machine path booting hosts use). */
	open?: boolean;
}

type JsonSchema = Record<string, unknown>;

export interface OpenApiDocument {
	openapi: string;
	info: { title: string; version: string; description?: string };
	servers: { url: string }[];
	paths: Record<string, Record<string, unknown>>;
	security?: Record<string, string[]>[];
	components: Record<string, unknown>;
	tags: { name: string; description?: string }[];
}

const BODY_METHODS = new Set(["post", "put", "patch"]);

/** /api/mainscripts/:id → /api/mainscripts/{id} */
export function openApiPath(path: string): string {
	return path.replace(/:([A-Za-z0-9_]+)\??/g, "{$1}");
}

export function pathParamNames(path: string): string[] {
	return [...path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
}

/** "string|optional|min:3" → { type: "string", optional: true, min: 3 } */
function expandShorthand(rule: string): Record<string, unknown> {
	const [type, ...flags] = rule.split("|");
	const expanded: Record<string, unknown> = { type };
	for (const flag of flags) {
		const [name, value] = flag.split(":");
		expanded[name!] = value === undefined ? true : Number.isNaN(Number(value)) ? value : Number(value);
	}
	return expanded;
}

function normalizeRule(rule: unknown): Record<string, unknown> {
	if (typeof rule === "string") return expandShorthand(rule);
	if (Array.isArray(rule)) return { type: "multi", rules: rule, optional: rule.every((r) => normalizeRule(r).optional === true) };
	if (rule && typeof rule === "object") return rule as Record<string, unknown>;
	return { type: "any" };
}

/** A RegExp survives only locally; over the transporter it arrives as {} and is left out. */
function patternOf(pattern: unknown): string | undefined {
	if (pattern instanceof RegExp) return pattern.source;
	return typeof pattern === "string" ? pattern : undefined;
}

/** JSON Schema of one fastest-validator rule (the subset our services use, then a safe fallback). */
export function schemaOfRule(input: unknown): JsonSchema {
	const rule = normalizeRule(input);
	const schema: JsonSchema = {};
	switch (rule.type) {
		case "string":
		case "email":
		case "url":
		case "uuid":
			schema.type = "string";
			if (rule.type === "email") schema.format = "email";
			if (rule.type === "url") schema.format = "uri";
			if (rule.type === "uuid") schema.format = "uuid";
			if (typeof rule.min === "number") schema.minLength = rule.min;
			if (typeof rule.max === "number") schema.maxLength = rule.max;
			if (rule.empty === false && schema.minLength === undefined) schema.minLength = 1;
			if (patternOf(rule.pattern)) schema.pattern = patternOf(rule.pattern);
			if (Array.isArray(rule.enum)) schema.enum = rule.enum;
			break;
		case "number":
			schema.type = rule.integer ? "integer" : "number";
			if (typeof rule.min === "number") schema.minimum = rule.min;
			if (typeof rule.max === "number") schema.maximum = rule.max;
			if (rule.positive) schema.minimum = Math.max(Number(schema.minimum ?? 1), rule.integer ? 1 : 0);
			if (rule.positive && !rule.integer) schema.exclusiveMinimum = true;
			break;
		case "boolean":
			schema.type = "boolean";
			break;
		case "enum":
			schema.enum = Array.isArray(rule.values) ? rule.values : [];
			break;
		case "equal":
			schema.enum = [rule.value];
			break;
		case "array":
			schema.type = "array";
			schema.items = rule.items === undefined ? {} : schemaOfRule(rule.items);
			if (typeof rule.min === "number") schema.minItems = rule.min;
			if (typeof rule.max === "number") schema.maxItems = rule.max;
			break;
		case "object":
			Object.assign(schema, objectSchema((rule.props ?? rule.properties ?? {}) as Record<string, unknown>));
			if (rule.strict === true || rule.strict === "remove") schema.additionalProperties = false;
			break;
		case "multi":
			schema.anyOf = (rule.rules as unknown[]).map(schemaOfRule);
			break;
		default:
			// "any", custom checkers and types we do not map: accept anything, say so.
			break;
	}
	if (typeof rule.description === "string") schema.description = rule.description;
	if (rule.default !== undefined && typeof rule.default !== "function") schema.default = rule.default;
	return schema;
}

function isOptional(rule: unknown): boolean {
	const r = normalizeRule(rule);
	return r.optional === true || r.default !== undefined;
}

/** An object schema of named rules; `$$` keys (e.g. $$strict) are validator options, not fields. */
export function objectSchema(params: Record<string, unknown>, omit: readonly string[] = []): JsonSchema {
	const names = Object.keys(params).filter((name) => !name.startsWith("$$") && !omit.includes(name));
	const required = names.filter((name) => !isOptional(params[name]));
	const schema: JsonSchema = { type: "object", properties: Object.fromEntries(names.map((name) => [name, schemaOfRule(params[name])])) };
	if (required.length) schema.required = required;
	if (params.$$strict === true) schema.additionalProperties = false;
	return schema;
}

function operationId(route: RouteEntry): string {
	return `${route.method.toLowerCase()}_${route.path.replace(/^\/api\/?/, "").replace(/[/:.{}-]+/g, "_").replace(/^_|_$/g, "") || "root"}`;
}

function tagOf(route: RouteEntry): string {
	return route.action.split(".")[0]!;
}

const ERROR_RESPONSE = { $ref: "#/components/responses/Error" };

function operation(route: RouteEntry): Record<string, unknown> {
	const method = route.method.toLowerCase();
	const params = route.params ?? {};
	const inPath = pathParamNames(route.path);
	const parameters: Record<string, unknown>[] = inPath.map((name) => ({
		name,
		in: "path",
		required: true,
		schema: params[name] !== undefined ? schemaOfRule(params[name]) : { type: "string" },
	}));
	const op: Record<string, unknown> = {
		operationId: operationId(route),
		summary: route.description ?? route.action,
		tags: [tagOf(route)],
		"x-moleculer-action": route.action,
	};
	if (BODY_METHODS.has(method)) {
		const body = objectSchema(params, inPath);
		op.requestBody = {
			required: Array.isArray(body.required) && body.required.length > 0,
			content: { "application/json": { schema: body } },
		};
	} else {
		for (const name of Object.keys(params)) {
			if (name.startsWith("$$") || inPath.includes(name)) continue;
			parameters.push({ name, in: "query", required: !isOptional(params[name]), schema: schemaOfRule(params[name]) });
		}
	}
	if (parameters.length) op.parameters = parameters;
	// Anonymous or with a token: `{}` is the anonymous alternative.
	if (route.open) op.security = [{}, { bearerAuth: [] }];
	op.responses = {
		"2XX": { description: "Success: JSON, or text/plain where the resource is a raw script" },
		"401": ERROR_RESPONSE,
		"403": ERROR_RESPONSE,
		"404": ERROR_RESPONSE,
		"422": ERROR_RESPONSE,
		default: ERROR_RESPONSE,
	};
	return op;
}

/** Routes outside the alias table (plain HTTP handlers of the gateway); a fresh copy per document. */
const artifactRoute = () => ({
	get: {
		operationId: "get_artifact",
		summary: "Download a built artifact (file store mode; with S3 the row's url points at the bucket)",
		tags: ["artifacts"],
		// Open when the machine path (machine-path.ts) lists the downloads, as it does for booting hosts.
		security: machineRequestOf("GET", "/api/artifacts/{key}") ? [{}] : [{ bearerAuth: [] }],
		parameters: [{ name: "key", in: "path", required: true, description: "e.g. isos/1/dist.iso", schema: { type: "string" } }],
		responses: {
			"200": { description: "The file", content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } } },
			"404": ERROR_RESPONSE,
		},
	},
});

export function buildOpenApiDocument(routes: readonly RouteEntry[], options: { title?: string; version: string; serverUrl: string; auth?: boolean }): OpenApiDocument {
	const paths: OpenApiDocument["paths"] = {};
	const sorted = [...routes].sort((a, b) => (a.path === b.path ? a.method.localeCompare(b.method) : a.path.localeCompare(b.path)));
	for (const route of sorted) {
		const methods = route.method === "*" ? ["get", "post", "put", "delete"] : [route.method.toLowerCase()];
		const entry = (paths[openApiPath(route.path)] ??= {});
		for (const method of methods) entry[method] = operation({ ...route, method });
	}
	paths["/api/artifacts/{key}"] = artifactRoute();
	const tags = [...new Set([...sorted.map(tagOf), "artifacts"])].sort().map((name) => ({ name }));
	if (options.auth === false) for (const operations of Object.values(paths)) for (const op of Object.values(operations) as Record<string, unknown>[]) delete op.security;
	return {
		openapi: "3.0.3",
		info: {
			title: options.title ?? "Cluster Platform Provisioner",
			version: options.version,
			description: "Generated at runtime from the gateway's route table and the services' parameter rules.",
		},
		servers: [{ url: options.serverUrl }],
		paths,
		// Admin calls need `Authorization: Bearer <token>` (API_TOKENS or `clusterplatform token create`).
		...(options.auth === false ? {} : { security: [{ bearerAuth: [] }] }),
		components: {
			...(options.auth === false ? {} : { securitySchemes: { bearerAuth: { type: "http", scheme: "bearer" } } }),
			schemas: {
				Error: {
					type: "object",
					properties: {
						name: { type: "string" },
						message: { type: "string" },
						code: { type: "integer" },
						type: { type: "string" },
						data: { description: "For 422: [{field, message, type}] naming each offending field" },
					},
					required: ["name", "message", "code"],
				},
			},
			responses: {
				Error: { description: "Error", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
			},
		},
		tags,
	};
}
