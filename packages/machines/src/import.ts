import type { ServiceBroker } from "moleculer";
import { InvalidInputError, invalid, type FieldProblem } from "@clusterplatform/core";
import { parseCsv } from "./csv";
import { MACHINE_PARAMS } from "./fields";

/** Most machines one import takes (all or nothing, in one transaction). */
export const IMPORT_MAX = 10_000;

export interface ImportParams {
	machines?: Record<string, unknown>[];
	csv?: string;
}

/** One row of an import, with the label its errors name (machines[3], or csv line 4). */
export interface ImportRow {
	row: Record<string, unknown>;
	label: string;
}

type RowCheck = (row: Record<string, unknown>) => true | { field?: string; message?: string; type?: string; actual?: unknown }[];

/** An import's rows, each with its label; 422 naming csv or machines when the body is neither. */
export function importRows(params: ImportParams): ImportRow[] {
	if ((params.machines === undefined) === (params.csv === undefined)) invalid("machines", 'send either "machines" (a JSON array) or "csv" (CSV text)');
	if (params.machines) return params.machines.map((row, index) => ({ row, label: `machines[${index}]` }));
	let parsed: ReturnType<typeof parseCsv>;
	try {
		parsed = parseCsv(params.csv!, IMPORT_MAX);
	} catch (err) {
		return invalid("csv", (err as Error).message);
	}
	for (const column of parsed.header) if (!(column in MACHINE_PARAMS)) invalid("csv", `names a column "${column.slice(0, 40)}", which is no machine field (${Object.keys(MACHINE_PARAMS).join(", ")})`);
	return parsed.records.map(({ line, cells }) => ({ row: csvMachine(cells, `csv line ${line}`), label: `csv line ${line}` }));
}

/** The check an import row goes through: the same rules as POST /api/machines. */
export function importRowCheck(broker: ServiceBroker): RowCheck {
	if (!broker.validator) throw new Error("the broker has no validator: imports cannot be checked");
	// fastest-validator's compiled check; its declared type is wider (it may be async), machines' rules are not.
	return broker.validator.compile({ ...MACHINE_PARAMS, $$strict: true }) as RowCheck;
}

/** One import row through the rules of POST /api/machines; a problem names the row. */
export function checkedImportRow(check: RowCheck, row: Record<string, unknown>, label: string): Record<string, unknown> {
	const copy = { ...row };
	const result = check(copy);
	if (result === true) return copy;
	const problems: FieldProblem[] = result.map((p) => ({
		field: `${label}.${p.type === "objectStrict" ? String(p.actual) : (p.field ?? "")}`,
		message: p.type === "objectStrict" ? "is not a machine field" : (p.message ?? "is invalid").replace(/^The '([^']+)' field /, ""),
	}));
	throw new InvalidInputError(problems);
}

/** The index of the first value an earlier one repeats, or null. */
export function firstDuplicate(values: string[]): number | null {
	const seen = new Set<string>();
	for (let index = 0; index < values.length; index++) {
		if (seen.has(values[index]!)) return index;
		seen.add(values[index]!);
	}
	return null;
}

/** A CSV record as a machine: macs split on spaces or ';', labels "k=v;k=v", bmcPort a number. */
function csvMachine(cells: Record<string, string>, label: string): Record<string, unknown> {
	const row: Record<string, unknown> = { ...cells };
	if (cells.macs !== undefined) row.macs = cells.macs.split(/[\s;|]+/).filter(Boolean);
	if (cells.labels !== undefined) {
		const labels: Record<string, string> = {};
		for (const pair of cells.labels.split(";").filter((p) => p.trim())) {
			const at = pair.indexOf("=");
			if (at < 1) invalid(`${label}.labels`, `"${pair.slice(0, 40)}" is not key=value`);
			labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
		}
		row.labels = labels;
	}
	return row;
}
