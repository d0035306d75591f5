import type { ApiClient } from "./api";
import { usageError } from "./errors";

/** A JSON Schema property as the gateway's OpenAPI document describes a field. */
export interface FieldSchema {
	type?: string;
	enum?: unknown[];
	format?: string;
	description?: string;
	anyOf?: FieldSchema[];
	minimum?: number;
	maximum?: number;
}

export interface Operation {
	/** Body fields (POST/PUT) or query parameters (GET), by name. */
	fields: Record<string, FieldSchema>;
	required: string[];
}

/** One REST resource under /api/<name>, with the operations the gateway serves for it. */
export interface Resource {
	name: string;
	list?: Operation;
	create?: Operation;
	get?: Operation;
	update?: Operation;
	remove?: Operation;
	/** Sub-routes of one row, e.g. "status" (PUT /api/distributors/{id}/status), "script". */
	actions: Record<string, Record<string, Operation>>;
}

/** Gateway endpoints that are not resources. */
const NOT_RESOURCES = new Set(["artifacts", "health", "openapi.json", "metrics"]);

/** The parts of an OpenAPI operation object the CLI reads: its JSON body's schema and its query parameters. */
interface OpenApiOperation {
	requestBody?: { content?: { "application/json"?: { schema?: { properties?: Record<string, FieldSchema>; required?: unknown } } } };
	parameters?: { in: string; name: string; required?: boolean; schema?: FieldSchema }[];
}

function operationOf(op: OpenApiOperation | undefined): Operation {
	const fields: Record<string, FieldSchema> = {};
	let required: string[] = [];
	const body = op?.requestBody?.content?.["application/json"]?.schema;
	if (body?.properties) {
		Object.assign(fields, body.properties);
		required = Array.isArray(body.required) ? (body.required as string[]) : [];
	}
	for (const parameter of op?.parameters ?? []) {
		if (parameter.in !== "query") continue;
		fields[parameter.name] = parameter.schema ?? {};
		if (parameter.required) required.push(parameter.name);
	}
	return { fields, required };
}

/**
 * The resources of a running gateway, read from its /api/openapi.json: the document is generated
 * from the live route table and each action's validation rules, so the CLI knows every resource
 * (including ones newer than itself) and the type of every field without a table of its own.
 */
export function resourcesOf(document: { paths?: Record<string, Record<string, OpenApiOperation>> }): Map<string, Resource> {
	const resources = new Map<string, Resource>();
	for (const [path, methods] of Object.entries(document.paths ?? {})) {
		const match = /^\/api\/([^/{}]+)(\/\{id\})?(?:\/([^/{}]+))?$/.exec(path);
		if (!match || NOT_RESOURCES.has(match[1]!)) continue;
		const [, name, byId, sub] = match as unknown as [string, string, string | undefined, string | undefined];
		const resource = resources.get(name) ?? { name, actions: {} };
		resources.set(name, resource);
		const m = methods;
		if (sub !== undefined) {
			if (byId) resource.actions[sub] = Object.fromEntries(Object.entries(m).map(([method, op]) => [method, operationOf(op)]));
			continue;
		}
		if (byId) {
			if (m.get) resource.get = operationOf(m.get);
			if (m.put) resource.update = operationOf(m.put);
			if (m.delete) resource.remove = operationOf(m.delete);
		} else {
			if (m.get) resource.list = operationOf(m.get);
			if (m.post) resource.create = operationOf(m.post);
		}
	}
	return resources;
}

export async function loadResources(api: ApiClient): Promise<Map<string, Resource>> {
	return resourcesOf(await api.request("/openapi.json"));
}

/** The named resource; a usage error listing the real ones otherwise. `build iso` also finds "isos". */
export function findResource(resources: Map<string, Resource>, name: string | undefined, what = "resource"): Resource {
	const names = [...resources.keys()].sort();
	if (!name) usageError(`name a ${what}: ${names.join(", ")}`);
	const found = resources.get(name) ?? resources.get(`${name}s`);
	if (!found) usageError(`unknown ${what} "${name}"; this gateway serves: ${names.join(", ")}`);
	return found;
}

export function describeField(name: string, schema: FieldSchema, required: boolean): string {
	const type = schema.enum ? schema.enum.map(String).join("|") : (schema.type ?? (schema.anyOf ? schema.anyOf.map((s) => s.type ?? "any").join("|") : "any"));
	return `  --${name}${required ? " (required)" : ""}  ${type}${schema.description ? `  ${schema.description}` : ""}`;
}

/** `--help` for one operation of a resource: its fields, from the API itself. */
export function operationHelp(title: string, op: Operation | undefined): string {
	if (!op) return `${title}: not offered by this gateway`;
	const names = Object.keys(op.fields);
	if (!names.length) return `${title}: no fields`;
	return [`${title} fields (from the gateway's OpenAPI document):`, ...names.map((n) => describeField(n, op.fields[n]!, op.required.includes(n)))].join("\n");
}
