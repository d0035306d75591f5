import { usageError } from "./errors";

/** What commands print: JSON for machines (--json), short tables and key/value lines for people. */

export interface Output {
	json: boolean;
	quiet: boolean;
	/** Print only this field of the row, raw (--value url): for shell variables without jq. */
	value?: string;
}

export function printJson(value: unknown): void {
	process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

const CELL_MAX = 36;
/** Timestamps make tables wide and say little at a glance; `get` and --json show them. */
const HIDDEN_IN_TABLES = new Set(["createdAt", "updatedAt"]);

function cell(value: unknown): string {
	if (value === null || value === undefined) return "";
	const text = typeof value === "object" ? JSON.stringify(value) : String(value);
	const flat = text.replace(/\r?\n/g, "⏎");
	return flat.length > CELL_MAX ? `${flat.slice(0, CELL_MAX - 1)}…` : flat;
}

/** Rows as an aligned table; columns that are empty in every row are left out. */
export function table(rows: Record<string, unknown>[]): string {
	if (!rows.length) return "(none)";
	const keys = [...new Set(rows.flatMap((row) => Object.keys(row)))].filter(
		(key) => !HIDDEN_IN_TABLES.has(key) && rows.some((row) => row[key] !== null && row[key] !== undefined && row[key] !== ""),
	);
	const cells = rows.map((row) => keys.map((key) => cell(row[key])));
	const widths = keys.map((key, i) => Math.max(key.length, ...cells.map((c) => c[i]!.length)));
	const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join("  ").trimEnd();
	return [line(keys), ...cells.map(line)].join("\n");
}

/** One row as `key: value` lines; multi-line values (scripts) follow their key, indented. */
export function keyValues(row: Record<string, unknown>): string {
	const width = Math.max(...Object.keys(row).map((k) => k.length));
	return Object.entries(row)
		.map(([key, value]) => {
			const text = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
			if (text.includes("\n")) return `${key}:\n${text.replace(/\n$/, "").split("\n").map((l) => `    ${l}`).join("\n")}`;
			return `${`${key}:`.padEnd(width + 1)} ${text}`;
		})
		.join("\n");
}

/** A row (or any answer) in the chosen form; --quiet prints only its id. */
export function printRow(out: Output, row: unknown): void {
	if (out.value !== undefined) return printValue(out.value, row);
	if (out.json) return printJson(row);
	if (row && typeof row === "object" && !Array.isArray(row)) {
		const record = row as Record<string, unknown>;
		if (out.quiet && record.id !== undefined) return void process.stdout.write(`${record.id}\n`);
		return void process.stdout.write(`${keyValues(record)}\n`);
	}
	process.stdout.write(typeof row === "string" ? (row.endsWith("\n") ? row : `${row}\n`) : `${JSON.stringify(row)}\n`);
}

function printValue(field: string, row: unknown): void {
	const record = row && typeof row === "object" && !Array.isArray(row) ? (row as Record<string, unknown>) : {};
	if (!(field in record)) usageError(`--value ${field}: the answer has no such field; it has ${Object.keys(record).join(", ") || "none"}`);
	const value = record[field];
	const text = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
	process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

/** A moleculer-db page {rows, total, page, pageSize, totalPages}, or a plain array. */
export function printList(out: Output, answer: unknown): void {
	if (out.json) return printJson(answer);
	const page = answer as { rows?: unknown; total?: unknown; page?: number; totalPages?: number } | null;
	const rows = (Array.isArray(answer) ? answer : Array.isArray(page?.rows) ? page.rows : null) as Record<string, unknown>[] | null;
	if (!rows) return printRow(out, answer);
	if (out.quiet) return void process.stdout.write(rows.map((r) => `${r.id}\n`).join(""));
	process.stdout.write(`${table(rows)}\n`);
	if (!Array.isArray(answer) && typeof page?.total === "number" && page.total > rows.length) {
		process.stdout.write(`(${rows.length} of ${page.total}; page ${page.page} of ${page.totalPages}: --page N --pageSize N)\n`);
	}
}
