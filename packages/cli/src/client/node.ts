import os from "node:os";
import readline from "node:readline";
import { Readable } from "node:stream";
import type { ScriptResult as DistributorScriptResult } from "@clusterplatform/distributor";
import { parseDuration } from "./args";
import type { CommandContext } from "./context";
import { segment } from "./context";
import { CliError, EXIT, exitCodeOfStatus, usageError } from "./errors";
import { bodyOf, readTextFile } from "./fields";
import { printJson } from "./output";
import { findResource } from "./resources";

/** The API's default for a script's run time, in seconds. */
const DEFAULT_SCRIPT_TIMEOUT_S = 300;
const NDJSON = "application/x-ndjson";

/** What PUT /api/localnodes/:id/script answers (the distributor's result). */
type ScriptResult = Pick<DistributorScriptResult, "code" | "signal" | "stdout" | "stderr">;

/** The exit code a shell would report: the script's own, or 128+N for signal N. */
export function exitCodeOfScript(result: ScriptResult): number {
	if (typeof result.code === "number") return result.code;
	const number = result.signal ? (os.constants.signals as Record<string, number>)[`SIG${result.signal.replace(/^SIG/, "")}`] : undefined;
	return number ? 128 + number : EXIT.failed;
}

/**
 * `node run <id> <script-file|-> [--timeout 5m] [--sshkeyId N | --privateKey @key]`: PUT
 * /api/localnodes/<id>/script with Accept: application/x-ndjson, so the script's stdout and stderr
 * are written here as the node produces them; the command exits with the script's exit code.
 */
export async function nodeCommand(ctx: CommandContext): Promise<number> {
	const verb = ctx.word(1, "run");
	if (verb === "hostkey") return hostKeyCommand(ctx);
	if (verb !== "run") usageError(`node ${verb}: the node commands are \`node run <id> <script-file>\` and \`node hostkey <id> [--hostKey K]\``);
	const id = ctx.word(2, "the localnode id");
	const file = ctx.line.positionals[3] ?? ctx.line.options.file;
	if (file === undefined) usageError("node run <id> <script-file>: missing the script file (- for stdin)");
	if (ctx.line.positionals.length > 4) usageError(`node run: unexpected "${ctx.line.positionals[4]}"`);
	const action = findResource(await ctx.allResources(), "localnodes").actions.script?.put;
	if (!action) usageError("this gateway does not run scripts on nodes (no PUT /api/localnodes/{id}/script)");
	const timeoutS = ctx.line.options.timeout === undefined ? DEFAULT_SCRIPT_TIMEOUT_S : Math.ceil(parseDuration(ctx.line.options.timeout, "--timeout") / 1000);
	const body = { ...bodyOf(ctx.line.fields, action), script: readTextFile(file, "the script"), timeout: timeoutS };
	const response = await ctx.api.send(`/localnodes/${segment(id)}/script`, {
		method: "PUT",
		json: body,
		// Streamed records when the gateway offers them, else the whole result when the script has ended.
		accept: `${NDJSON}, application/json;q=0.5`,
		timeoutMs: (timeoutS + 60) * 1000,
	});
	const streamed = response.headers.get("content-type")?.startsWith(NDJSON) === true;
	const result = streamed ? await relayRecords(response, !ctx.out.json) : ((await response.json()) as ScriptResult);
	if (ctx.out.json) printJson(result);
	else if (!streamed) {
		process.stdout.write(result.stdout);
		process.stderr.write(result.stderr);
	}
	return exitCodeOfScript(result);
}

/**
 * `node hostkey <id>`: the host key recorded for a node and the one it presents now (through its
 * site's distributor), to compare with the node's own; `node hostkey <id> --hostKey SHA256:…`
 * accepts it. A node gets scripts only once its key is accepted.
 */
async function hostKeyCommand(ctx: CommandContext): Promise<number> {
	const id = segment(ctx.word(2, "the localnode id"));
	const hostKey = ctx.line.fields.find(([name]) => name === "hostKey")?.[1];
	if (hostKey !== undefined) {
		const row = await ctx.api.request<{ hostKey: string }>(`/localnodes/${id}/hostkey`, { method: "PUT", json: { hostKey } });
		if (ctx.out.json) printJson(row);
		else console.log(`accepted ${row.hostKey}`);
		return EXIT.ok;
	}
	const keys = await ctx.api.request<{ recorded: string | null; presented: string }>(`/localnodes/${id}/hostkey`);
	if (ctx.out.json) printJson(keys);
	else console.log(`recorded:  ${keys.recorded ?? "none (no script runs until one is accepted)"}\npresented: ${keys.presented}`);
	return EXIT.ok;
}

type ScriptRecord = { stdout: string } | { stderr: string } | { code: number | null; signal: string | null } | { error: string; status: number };

/** Output records as they arrive (written through when `live`), until the one that says how the script ended. */
async function relayRecords(response: Response, live: boolean): Promise<ScriptResult> {
	const result: ScriptResult = { code: null, signal: null, stdout: "", stderr: "" };
	let ended = false;
	const lines = readline.createInterface({ input: Readable.fromWeb(response.body as import("node:stream/web").ReadableStream), crlfDelay: Infinity });
	try {
		for await (const line of lines) if (line && relayRecord(parseRecord(line), live, result)) ended = true;
	} catch (err) {
		if (err instanceof CliError) throw err;
		throw new CliError(`the script's output broke off: ${(err as Error).message}`, EXIT.unreachable);
	}
	if (!ended) throw new CliError("the script's output ended without its exit status (connection to the gateway lost?)", EXIT.failed);
	return result;
}

function parseRecord(line: string): ScriptRecord {
	try {
		return JSON.parse(line) as ScriptRecord;
	} catch {
		throw new CliError(`the gateway sent a line that is not a script record: ${line.slice(0, 80)}`, EXIT.failed);
	}
}

/** Writes or keeps one record; true when it is the one that says how the script ended. */
function relayRecord(record: ScriptRecord, live: boolean, result: ScriptResult): boolean {
	if ("stdout" in record) {
		if (live) process.stdout.write(record.stdout);
		else result.stdout += record.stdout;
	} else if ("stderr" in record) {
		if (live) process.stderr.write(record.stderr);
		else result.stderr += record.stderr;
	} else if ("error" in record) {
		throw new CliError(`the script's run broke off: ${record.error}`, exitCodeOfStatus(record.status));
	} else {
		result.code = record.code;
		result.signal = record.signal;
		return true;
	}
	return false;
}
