import path from "node:path";
import type { MachineRow, MachineStatus } from "@clusterplatform/machines";
import { parseDuration } from "./args";
import type { CommandContext } from "./context";
import { createCommand, deleteCommand, getCommand, listCommand, updateCommand } from "./crud";
import { segment } from "./context";
import { CliError, EXIT, usageError } from "./errors";
import { readTextFile } from "./fields";
import { keyValues, printJson, printRow, table } from "./output";

/** The machines' own commands: what the generic list/get/create/update/delete and `action` do not give. */

const POLL_MS = 1000;
const DEFAULT_MACHINE_WAIT = "30m";
/** A machine's status stops changing by itself once it is one of these. */
const SETTLED: readonly MachineStatus[] = ["ready", "failed"];
const POWER_ACTIONS = ["on", "off", "cycle", "status"] as const;
/** A power call goes to the BMC through the site's distributor, bounded there; this bounds the wait for its answer. */
const POWER_TIMEOUT_MS = 120_000;

type Machine = Pick<MachineRow, "id" | "name" | "status" | "statusReason"> & { warning?: string | null };

/** An id from the command line: a positive integer, or a usage error before anything is sent. */
function machineId(word: string): number {
	if (!/^[1-9]\d{0,15}$/.test(word)) usageError(`"${word}" is not a machine id (a positive integer)`);
	return Number(word);
}

function machineIds(words: string[], what: string): number[] {
	if (!words.length) usageError(`${what}: name at least one machine id`);
	const ids = words.map(machineId);
	const twice = ids.find((id, i) => ids.indexOf(id) !== i);
	if (twice !== undefined) usageError(`${what}: machine ${twice} is named twice`);
	return ids;
}

/**
 * What `machines import FILE` sends: a JSON array (or {"machines": […]}) as machines, anything else
 * as CSV; the API checks every row and names the bad one.
 */
export function importBody(text: string, file: string): { machines: unknown[] } | { csv: string } {
	const trimmed = text.trimStart();
	const looksJson = path.extname(file).toLowerCase() === ".json" || trimmed.startsWith("[") || trimmed.startsWith("{");
	if (!looksJson) return { csv: text };
	let parsed: unknown;
	try {
		parsed = JSON.parse(text);
	} catch (err) {
		usageError(`${file === "-" ? "stdin" : file} is not valid JSON: ${(err as Error).message}`);
	}
	if (Array.isArray(parsed)) return { machines: parsed };
	const machines = (parsed as { machines?: unknown })?.machines;
	if (Array.isArray(machines)) return { machines };
	usageError(`${file === "-" ? "stdin" : file}: JSON must be an array of machines or {"machines": [...]}`);
}

async function importCommand(ctx: CommandContext): Promise<void> {
	const file = ctx.line.positionals[2] ?? ctx.line.options.file;
	if (file === undefined) usageError("machines import <file|->: missing the file (CSV with a header line, or JSON)");
	ctx.noFields("machines import");
	const answer = await ctx.api.request<{ created: number; ids: number[] }>("/machines/import", { method: "POST", json: importBody(readTextFile(file, "the machines"), file), timeoutMs: 300_000 });
	if (ctx.out.json) return printJson(answer);
	if (ctx.out.quiet) return void process.stdout.write(answer.ids.map((id) => `${id}\n`).join(""));
	console.log(`imported ${answer.created} machine${answer.created === 1 ? "" : "s"}: ${answer.ids.join(", ")}`);
}

interface Plan {
	machine: Machine;
	profile: { id: number; name: string } | null;
	selector: { id: number; name: string; ranks: number[]; matchedOn: string[] } | null;
	why: string;
	scripts: Record<string, string>;
	problems: { script: string; missing: string[]; message: string }[];
}

/** A plan for people: who gets what and why, each problem, then each rendered script under its name. */
export function planText(plan: Plan): string {
	const head = keyValues({
		machine: `${plan.machine.id} ${plan.machine.name} (${plan.machine.status}${plan.machine.statusReason ? `: ${plan.machine.statusReason}` : ""})`,
		profile: plan.profile ? `${plan.profile.id} ${plan.profile.name}` : "none",
		selector: plan.selector ? `${plan.selector.id} ${plan.selector.name}` : "none",
		why: plan.why,
	});
	const problems = plan.problems.map((p) => `problem in ${p.script}: ${p.message}`);
	const scripts = Object.entries(plan.scripts).map(([name, text]) => `--- ${name} ---\n${text.replace(/\n$/, "")}`);
	return [head, ...problems, ...scripts].join("\n");
}

async function planCommand(ctx: CommandContext): Promise<void> {
	const id = machineId(ctx.word(2, "the machine id"));
	ctx.noFields("machines plan");
	const plan = await ctx.api.request<Plan>(`/machines/${id}/plan`);
	if (ctx.out.json) return printJson(plan);
	console.log(planText(plan));
}

/** The generic commands, spelt `machines list …` too: the same code, "machines" as the resource. */
const GENERIC: Record<string, (ctx: CommandContext) => Promise<void>> = { list: listCommand, get: getCommand, create: createCommand, update: updateCommand, delete: deleteCommand };

/** `machines list|get|create|update|delete|import|plan|wait …` */
export async function machinesCommand(ctx: CommandContext): Promise<void | number> {
	const verb = ctx.word(1, "a machines command: list, get, create, update, delete, import, plan or wait");
	const generic = GENERIC[verb];
	if (generic) {
		ctx.line.positionals.splice(0, 2, verb, "machines");
		return generic(ctx);
	}
	if (verb === "import") return importCommand(ctx);
	if (verb === "plan") return planCommand(ctx);
	if (verb === "wait") return machinesWaitCommand(ctx);
	usageError(`machines ${verb}: use list, get, create, update, delete, import, plan or wait`);
}

/** `machines wait <id…>` (also spelt `wait machines <id…>`): follow machines someone else started. */
export async function machinesWaitCommand(ctx: CommandContext): Promise<number> {
	ctx.noFields("machines wait");
	return waitMachines(ctx, machineIds(ctx.line.positionals.slice(2), "machines wait"), new Map());
}

/** `power <id> on|off|cycle|status`: PUT /api/machines/:id/power, the BMC's answer printed. */
export async function powerCommand(ctx: CommandContext): Promise<void> {
	const id = machineId(ctx.word(1, "the machine id"));
	const action = ctx.word(2, `the power action: ${POWER_ACTIONS.join(", ")}`);
	if (!(POWER_ACTIONS as readonly string[]).includes(action)) usageError(`power: "${action}" is not one of ${POWER_ACTIONS.join(", ")}`);
	if (ctx.line.positionals.length > 3) usageError(`power: unexpected "${ctx.line.positionals[3]}"`);
	ctx.noFields("power");
	const answer = await ctx.api.request<{ id: number; power: string; action: string }>(`/machines/${id}/power`, { method: "PUT", json: { action }, timeoutMs: POWER_TIMEOUT_MS });
	if (ctx.out.json || ctx.out.value !== undefined) return printRow(ctx.out, answer);
	console.log(`machine ${answer.id}: power ${answer.power}${action === "status" ? "" : ` (after ${action})`}`);
}

/** One machine's outcome in POST /api/machines/provision's answer. */
interface ProvisionOutcome {
	id: number;
	/** 202 when provisioning began, else the error's HTTP status. */
	status: number;
	machine?: Machine;
	error?: { message: string };
}

/**
 * `provision <id…> [--profile N] [--wait [--timeout 30m]]`: one machine through POST
 * /api/machines/:id/provision, several through POST /api/machines/provision (the API bounds how
 * many go at once, and answers each one's outcome). With --wait, a line per machine each time its
 * status changes, until every one is ready or failed. Exit 1 if any was refused or failed.
 */
export async function provisionCommand(ctx: CommandContext): Promise<number> {
	const ids = machineIds(ctx.line.positionals.slice(1), "provision");
	const body = provisionBody(ctx.line.fields);
	if (ctx.line.options.timeout !== undefined) parseDuration(ctx.line.options.timeout, "--timeout");
	let outcomes: ProvisionOutcome[];
	if (ids.length === 1) {
		// One machine: an API refusal is this command's error, with its exit code (422 → 7, 503 → 1, …).
		const machine = await ctx.api.request<Machine>(`/machines/${ids[0]}/provision`, { method: "POST", json: body, timeoutMs: POWER_TIMEOUT_MS });
		outcomes = [{ id: machine.id, status: 202, machine }];
	} else {
		const answer = await ctx.api.request<{ results: ProvisionOutcome[] }>("/machines/provision", { method: "POST", json: { ids, ...body }, timeoutMs: 31 * 60_000 });
		outcomes = answer.results;
		if (ctx.out.json && !ctx.line.options.wait) printJson(answer);
	}
	const refused = outcomes.filter((outcome) => outcome.status !== 202 || !outcome.machine);
	for (const outcome of refused) console.error(`machine ${outcome.id}: not provisioned: ${outcome.status} ${outcome.error?.message ?? "no reason given"}`);
	const started = outcomes.flatMap((outcome) => (outcome.status === 202 && outcome.machine ? [outcome.machine] : []));
	for (const machine of started) if (machine.warning) console.error(`machine ${machine.id}: warning: ${machine.warning}`);
	if (!ctx.line.options.wait) {
		if (ids.length === 1) printRow(ctx.out, started[0]);
		else if (!ctx.out.json) printFinal(ctx, started);
		return refused.length ? EXIT.failed : EXIT.ok;
	}
	if (!started.length) return EXIT.failed;
	const code = await waitMachines(ctx, started.map((machine) => machine.id), new Map(started.map((machine) => [machine.id, machine])));
	return refused.length ? EXIT.failed : code;
}

/** --profile N, the only field provisioning takes (the API checks that the profile exists). */
function provisionBody(fields: [string, string][]): { profile?: number } {
	const unknown = fields.find(([name]) => name !== "profile");
	if (unknown) usageError(`provision takes only --profile N, got --${unknown[0]}`);
	if (fields.length > 1) usageError("--profile is given twice");
	if (!fields.length) return {};
	const raw = fields[0]![1];
	if (!/^[1-9]\d{0,15}$/.test(raw)) usageError(`--profile must be a profile id (a positive integer), got "${raw}"`);
	return { profile: Number(raw) };
}

/** One progress line: the machine, its status and why. */
export function progressLine(machine: Machine): string {
	return `machine ${machine.id} ${machine.name}: ${machine.status}${machine.statusReason ? ` (${machine.statusReason})` : ""}`;
}

/**
 * Poll each machine until all are ready or failed, printing a line (stderr, like a build's progress)
 * whenever one's status or reason changes; the final rows go to stdout. Exit 1 if any failed, 5
 * when --timeout runs out first (the machines go on).
 */
async function waitMachines(ctx: CommandContext, ids: number[], known: Map<number, Machine>): Promise<number> {
	const timeout = ctx.line.options.timeout ?? DEFAULT_MACHINE_WAIT;
	const deadline = Date.now() + parseDuration(timeout, "--timeout");
	const printed = new Map<number, string>();
	const report = (machine: Machine) => {
		const line = progressLine(machine);
		if (printed.get(machine.id) === line) return;
		printed.set(machine.id, line);
		if (ctx.line.options.progress) process.stderr.write(`${line}\n`);
	};
	for (const machine of known.values()) report(machine);
	let latest = new Map(known);
	for (;;) {
		const rows = await Promise.all(ids.map((id) => ctx.api.request<Machine>(`/machines/${segment(String(id))}`, { timeoutMs: Math.max(1000, Math.min(30_000, deadline - Date.now())) })));
		latest = new Map(rows.map((row) => [row.id, row]));
		rows.forEach(report);
		if (rows.every((row) => SETTLED.includes(row.status))) break;
		if (Date.now() + POLL_MS > deadline) {
			const going = rows.filter((row) => !SETTLED.includes(row.status));
			printFinal(ctx, rows);
			throw new CliError(`not settled after ${timeout}: ${going.map((row) => `machine ${row.id} is ${row.status}`).join(", ")}; they go on: clusterplatform machines wait ${going.map((row) => row.id).join(" ")}`, EXIT.timeout);
		}
		await new Promise((resolve) => setTimeout(resolve, POLL_MS));
	}
	const rows = ids.map((id) => latest.get(id)!);
	printFinal(ctx, rows);
	const failed = rows.filter((row) => row.status === "failed");
	if (failed.length) {
		console.error(`clusterplatform: ${failed.length} of ${rows.length} machine${rows.length === 1 ? "" : "s"} failed: ${failed.map((row) => row.id).join(", ")}`);
		return EXIT.failed;
	}
	return EXIT.ok;
}

function printFinal(ctx: CommandContext, rows: Machine[]): void {
	const summary = rows.map(({ id, name, status, statusReason }) => ({ id, name, status, statusReason }));
	if (ctx.out.json) return printJson(rows);
	if (ctx.out.quiet) return void process.stdout.write(rows.map((row) => `${row.id}\n`).join(""));
	process.stdout.write(`${table(summary)}\n`);
}
