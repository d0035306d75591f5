import { InvalidInputError, type FieldProblem } from "@clusterplatform/core";
import { CLEARABLE, MACHINE_PARAMS, checkBmc, normalizeMac, normalizeUuid } from "./fields";
import type { StoredMachine } from "./inventory";
import type { MachineRow } from "./machines";

/*
 * A client's machine fields as the machines table stores them: MACs normalized into one string,
 * UUIDs in one spelling, the BMC whole, its password sealed.
 */

type Seal = (text: string) => string;

/** The machine's fields as stored, from a create or import row (already validated). */
export function storedMachine(params: Record<string, unknown>, label: string, seal: Seal): StoredMachine {
	const row: Record<string, unknown> = {};
	for (const name of Object.keys(MACHINE_PARAMS)) if (params[name] !== undefined && params[name] !== "") row[name] = params[name];
	row.macs = uniqueMacs(params.macs as string[]);
	if (row.uuid) row.uuid = normalizeUuid(row.uuid as string);
	row.labels = row.labels ?? {};
	if (row.profileId === 0) delete row.profileId;
	try {
		checkBmc(row, row.bmcPassword);
	} catch (err) {
		throw prefixed(err, label);
	}
	if (row.bmcPassword) row.bmcPassword = seal(row.bmcPassword as string);
	return row as StoredMachine;
}

/** An update's changes as stored: "" clears a field, a new password is sealed, the BMC stays whole. */
export function storedChanges(params: Record<string, unknown>, current: MachineRow, seal: Seal): Partial<StoredMachine> {
	const changes: Record<string, unknown> = {};
	for (const [name, value] of Object.entries(params)) {
		if (value === undefined || !(name in MACHINE_PARAMS)) continue;
		changes[name] = value === "" && (CLEARABLE as readonly string[]).includes(name) ? null : value;
	}
	if (Array.isArray(changes.macs)) changes.macs = uniqueMacs(changes.macs as string[]);
	if (changes.uuid) changes.uuid = normalizeUuid(changes.uuid as string);
	if (changes.profileId === 0) changes.profileId = null;
	// An operator's status other than provisioning ends what provisioning was waiting for.
	if (changes.status !== undefined && changes.status !== "provisioning") changes.provisionDeadline = null;
	checkBmc({ ...current, ...changes }, changes.bmcPassword);
	if (changes.bmcPassword) changes.bmcPassword = seal(changes.bmcPassword as string);
	return changes as Partial<StoredMachine>;
}

function uniqueMacs(macs: string[]): string {
	return [...new Set(macs.map((m) => normalizeMac(m)!))].join(" ");
}

/** A validation error's fields prefixed with the import row they belong to. */
function prefixed(err: unknown, label: string): unknown {
	if (!label || !(err instanceof InvalidInputError)) return err;
	return new InvalidInputError((err.data as FieldProblem[]).map((p) => ({ ...p, field: `${label}.${p.field}` })));
}
