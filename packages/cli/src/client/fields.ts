import fs from "node:fs";
import { usageError } from "./errors";
import type { FieldSchema, Operation } from "./resources";

/** A file's text, or stdin's for "-". */
export function readTextFile(file: string, what: string): string {
	try {
		return fs.readFileSync(file === "-" ? 0 : file, "utf8");
	} catch (err) {
		usageError(`cannot read ${what} ${file === "-" ? "from stdin" : file}: ${(err as Error).message}`);
	}
}

function typesOf(schema: FieldSchema | undefined): string[] {
	if (!schema) return [];
	if (schema.anyOf) return schema.anyOf.flatMap(typesOf);
	return schema.type ? [schema.type] : [];
}

/**
 * One command-line value as the field's type says: numbers and booleans become JSON numbers and
 * booleans when they parse as such; `@file` (or `@-` for stdin) reads a text field from a file,
 * `@@…` is a literal leading "@". Anything that does not fit goes as given: the API's validation
 * names the field and the reason, so the CLI keeps no second copy of the rules.
 */
export function coerce(name: string, raw: string, schema: FieldSchema | undefined): unknown {
	const types = typesOf(schema);
	if (raw.startsWith("@@")) return raw.slice(1);
	if (raw.startsWith("@") && (types.length === 0 || types.includes("string"))) return readTextFile(raw.slice(1), `--${name}`);
	if ((types.includes("integer") || types.includes("number")) && /^-?\d+(\.\d+)?$/.test(raw)) return Number(raw);
	if (types.includes("boolean") && (raw === "true" || raw === "false")) return raw === "true";
	return raw;
}

/** kebab-case flags (--artifact-id) find camelCase fields (artifactId) when the API has no kebab one. */
function fieldName(name: string, op: Operation | undefined): string {
	if (!op || name in op.fields || !name.includes("-")) return name;
	const camel = name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
	return camel in op.fields ? camel : name;
}

/** The request body (or query) from the command line's fields; `--file` fills `text` (text registries). */
export function bodyOf(fields: [string, string][], op: Operation | undefined, file?: string): Record<string, unknown> {
	const body: Record<string, unknown> = {};
	if (file !== undefined) {
		if (op && !("text" in op.fields)) usageError(`--file fills the "text" field, which this resource does not have; fields: ${Object.keys(op.fields).join(", ") || "none"}`);
		body.text = readTextFile(file, "--file");
	}
	for (const [flag, raw] of fields) {
		const name = fieldName(flag, op);
		if (name in body) usageError(`--${name} is given twice`);
		body[name] = coerce(name, raw, op?.fields[name]);
	}
	return body;
}

/** Query parameters for a list or a generator (GET): strings as given. */
export function queryOf(fields: [string, string][], op: Operation | undefined): [string, string][] {
	return fields.map(([flag, raw]) => [fieldName(flag, op), raw.startsWith("@@") ? raw.slice(1) : raw]);
}
