import { createHash } from "node:crypto";
import type { OpenApiDocument } from "./openapi";

/**
 * An Insomnia v4 export (workspace → one folder per service → one request per route) derived from
 * the OpenAPI document, so the workspace follows the API as it grows. Output is deterministic:
 * ids are hashes of what they name and there are no timestamps, so a committed copy can be
 * checked for staleness by regenerating it.
 */

/** A sample call, e.g. from the seed tutorial: its method, URL path, JSON body and query. */
export interface ExampleCall {
	title?: string;
	method: string;
	/** URL path, e.g. /api/mainscripts or /api/distributors/1/status */
	path: string;
	body?: unknown;
	query?: Record<string, string>;
}

export interface InsomniaResource {
	_id: string;
	_type: "workspace" | "environment" | "request_group" | "request";
	parentId: string | null;
	name: string;
	[field: string]: unknown;
}

export interface InsomniaExport {
	_type: "export";
	__export_format: 4;
	__export_source: string;
	resources: InsomniaResource[];
}

export const WORKSPACE_ID = "wrk_clusterplatform";
export const DEFAULT_BASE_URL = "http://localhost:3000";

function idOf(prefix: string, ...parts: string[]): string {
	return `${prefix}_${createHash("sha256").update(parts.join(" ")).digest("hex").slice(0, 24)}`;
}

function pathPattern(openApiPath: string): RegExp {
	const escaped = openApiPath.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+");
	return new RegExp(`^${escaped}$`);
}

/** What placeholder() reads of a JSON schema. */
interface JsonSchema {
	enum?: unknown[];
	default?: unknown;
	type?: string;
	minimum?: number;
	properties?: Record<string, JsonSchema>;
	required?: string[];
}

/** What is read here of an operation of the OpenAPI document (as openapi.ts builds it). */
interface Operation {
	tags?: string[];
	summary?: string;
	operationId?: string;
	"x-moleculer-action"?: string;
	security?: Record<string, unknown>[];
	requestBody?: { content?: Record<string, { schema?: JsonSchema } | undefined> };
}

/** A placeholder value for a JSON schema, for requests the examples do not cover. */
function placeholder(schema: JsonSchema): unknown {
	if (Array.isArray(schema.enum)) return schema.enum[0];
	if (schema.default !== undefined) return schema.default;
	switch (schema.type) {
		case "integer":
		case "number":
			return typeof schema.minimum === "number" ? schema.minimum : 1;
		case "boolean":
			return false;
		case "array":
			return [];
		case "object":
			return Object.fromEntries(Object.entries(schema.properties ?? {}).filter(([name]) => (schema.required ?? []).includes(name)).map(([name, s]) => [name, placeholder(s)]));
		default:
			return "";
	}
}

function samplePath(openApiPath: string): string {
	return openApiPath.replace(/\{[^}]+\}/g, (name) => (name === "{key}" ? "isos/1/dist.iso" : "1"));
}

/** Whether a call needs a token: the document says so, unless the operation allows anonymous calls. */
function needsToken(doc: OpenApiDocument, op: Operation): boolean {
	const security: Record<string, unknown>[] | undefined = op.security ?? doc.security;
	return Array.isArray(security) && security.length > 0 && !security.some((alternative) => Object.keys(alternative).length === 0);
}

export function insomniaExport(doc: OpenApiDocument, examples: readonly ExampleCall[] = [], baseUrl = DEFAULT_BASE_URL): InsomniaExport {
	const resources: InsomniaResource[] = [
		{ _id: WORKSPACE_ID, _type: "workspace", parentId: null, name: doc.info.title, description: "Generated from /api/openapi.json by `npm run insomnia`; do not edit by hand.", scope: "collection" },
		{ _id: "env_clusterplatform_base", _type: "environment", parentId: WORKSPACE_ID, name: "Base Environment", data: { base_url: baseUrl, api_token: "" } },
	];
	const folders = new Map<string, string>();
	let order = 0;
	for (const [openApiPath, operations] of Object.entries(doc.paths)) {
		const pattern = pathPattern(openApiPath);
		for (const [method, op] of Object.entries(operations) as [string, Operation][]) {
			const tag = op.tags?.[0] ?? "api";
			if (!folders.has(tag)) {
				folders.set(tag, idOf("fld", tag));
				resources.push({ _id: folders.get(tag)!, _type: "request_group", parentId: WORKSPACE_ID, name: tag, environment: {} });
			}
			const upper = method.toUpperCase();
			const example = examples.find((e) => e.method === upper && pattern.test(e.path));
			const query = example?.query ?? {};
			const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
			const body = example?.body ?? (bodySchema ? placeholder(bodySchema) : undefined);
			const request: InsomniaResource = {
				_id: idOf("req", upper, openApiPath),
				_type: "request",
				parentId: folders.get(tag)!,
				name: example?.title || op.summary || `${upper} ${openApiPath}`,
				description: `${upper} ${openApiPath} → ${op["x-moleculer-action"] ?? op.operationId}`,
				method: upper,
				url: `{{ _.base_url }}${example?.path ?? samplePath(openApiPath)}`,
				parameters: Object.entries(query).map(([name, value]) => ({ name, value })),
				headers: body !== undefined ? [{ name: "Content-Type", value: "application/json" }] : [],
				body: body !== undefined ? { mimeType: "application/json", text: JSON.stringify(body, null, 2) } : {},
				authentication: needsToken(doc, op) ? { type: "bearer", token: "{{ _.api_token }}" } : {},
				metaSortKey: order++,
			};
			resources.push(request);
		}
	}
	return { _type: "export", __export_format: 4, __export_source: "clusterplatform.insomnia:v1", resources };
}
