import type { Context } from "moleculer";
import { invalid } from "./errors";

/** The gateway copies these request facts into ctx.meta for actions that answer differently. */
export interface RequestMeta {
	accept?: string;
	$location?: string;
	$statusCode?: number;
	$responseType?: string;
	$responseHeaders?: Record<string, string>;
}

/** Raw text unless the client asked for JSON (iPXE, Anaconda and curl send no Accept or * / *). */
export function wantsJson(ctx: Context<unknown, RequestMeta>): boolean {
	const accept = ctx.meta.accept ?? "";
	return /application\/json/i.test(accept) && !/text\/plain/i.test(accept.split(",")[0] ?? "");
}

export function respondText(ctx: Context<unknown, RequestMeta>, text: string): string {
	ctx.meta.$responseType = "text/plain; charset=utf-8";
	return text;
}

/** 201 with a Location header pointing at the new resource (e.g. /api/mainscripts/3). */
export function respondCreated<T>(ctx: Context<unknown, RequestMeta>, body: T, location: string): T {
	ctx.meta.$statusCode = 201;
	ctx.meta.$location = location;
	return body;
}

/**
 * Columns a list may be sorted or searched by — only those the caller may read: sorting or a LIKE
 * search on any other column is an oracle for its values. Anything else is a 422, never SQL.
 */
export function checkListParams(params: { sort?: unknown; searchFields?: unknown; search?: unknown }, columns: readonly string[], searchable: readonly string[] = columns): void {
	// A NUL ends SQLite's SQL text (the adapter inlines the escaped term), and no stored text has control characters to find.
	if (typeof params.search === "string" && CONTROL_CHARACTER.test(params.search)) invalid("search", "must not contain control characters");
	const names = (value: unknown, field: string): string[] => {
		if (value === undefined) return [];
		const list = Array.isArray(value) ? value : typeof value === "string" ? value.split(/[\s,]+/) : invalid(field, "must be a string");
		return list.filter((name) => name !== "").map((name) => {
			if (typeof name !== "string") invalid(field, "must be a list of column names");
			return name;
		});
	};
	const sort = names(params.sort, "sort");
	for (const name of sort) {
		const column = name.replace(/^-/, "");
		if (!columns.includes(column)) invalid("sort", `cannot sort by "${column}"; one of ${columns.join(", ")}`);
	}
	const searchFields = names(params.searchFields, "searchFields");
	for (const name of searchFields) {
		if (!searchable.includes(name)) invalid("searchFields", `cannot search "${name}"; one of ${searchable.join(", ")}`);
	}
	// What was checked is what the database gets: "id " or ",x" must not reach it as an empty column.
	if (params.sort !== undefined) params.sort = sort.length ? sort : undefined;
	if (params.searchFields !== undefined) params.searchFields = searchFields.length ? searchFields : undefined;
}

const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/** fastest-validator rule: a positive integer id from the path. */
export const ID_PARAM = { type: "number", integer: true, positive: true, convert: true } as const;

/** A TCP or UDP port; spread it to add `optional`, `default` or `convert`. */
export const PORT_PARAM = { type: "number", integer: true, min: 1, max: 65535 } as const;

/** fastest-validator rule: text of at most `maxBytes` UTF-8 bytes, NUL-free. */
export function textParam(maxBytes: number, options: { optional?: boolean; empty?: boolean } = {}) {
	return {
		type: "string",
		optional: options.optional ?? false,
		empty: options.empty ?? false,
		custom: (value: unknown, errors: { type: string; actual: unknown; expected?: unknown; field?: string }[]) => {
			if (typeof value !== "string") return value;
			if (Buffer.byteLength(value, "utf8") > maxBytes) errors.push({ type: "stringMax", actual: value.length, expected: maxBytes });
			if (value.includes("\u0000")) errors.push({ type: "stringPattern", actual: "NUL byte", expected: "no NUL bytes" });
			return value;
		},
	};
}

/** fastest-validator rule: a site tag such as "felicitas.pojtinger.swabia.sol". */
export const ARTIFACT_ID_PARAM = {
	type: "string",
	pattern: /^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$/,
	messages: { stringPattern: "The 'artifactId' field must be a tag of letters, digits, '.', '_', ':' or '-' (at most 253)." },
} as const;

/** fastest-validator rule: a boolean that also accepts "true"/"false" from a query string. */
export const BOOLEAN_PARAM = { type: "boolean", convert: true } as const;
