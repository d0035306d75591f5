import { parseDuration } from "./args";
import type { CommandContext } from "./context";
import { segment } from "./context";
import { CliError, EXIT, usageError } from "./errors";
import { bodyOf } from "./fields";
import { printRow } from "./output";
import { ProgressBar } from "./progress";
import { findResource, operationHelp } from "./resources";

const POLL_MS = 500;
export const DEFAULT_WAIT = "10m";

interface BuildRow {
	id: number;
	status: "queued" | "working" | "done" | "failed";
	progress: number;
	error: string | null;
	url: string | null;
}

/**
 * Poll a builder row until it is done (returned) or failed (exit 1 with the row's error), showing
 * its progress; bounded by --timeout (exit 5, the build goes on).
 */
export async function waitForBuild(ctx: CommandContext, resource: string, id: number | string): Promise<BuildRow> {
	const timeoutMs = parseDuration(ctx.line.options.timeout ?? DEFAULT_WAIT, "--timeout");
	const deadline = Date.now() + timeoutMs;
	const bar = new ProgressBar(`${resource} ${id}`, process.stderr, ctx.showProgress);
	try {
		for (;;) {
			const row = await ctx.api.request<BuildRow>(`/${resource}/${segment(String(id))}`, { timeoutMs: Math.max(1000, Math.min(30_000, deadline - Date.now())) });
			if (typeof row?.status !== "string") throw new CliError(`${resource} ${id} has no build status: ${resource} is not a builder`, EXIT.usage);
			bar.update(Number(row.progress) || 0, row.status);
			if (row.status === "done") return row;
			if (row.status === "failed") throw new CliError(`${resource} ${id} failed: ${row.error ?? "no reason recorded"}`, EXIT.failed);
			if (Date.now() + POLL_MS > deadline) {
				throw new CliError(`${resource} ${id} is still ${row.status} (${Math.floor(row.progress)}%) after ${ctx.line.options.timeout ?? DEFAULT_WAIT}; it goes on: clusterplatform wait ${resource} ${id}`, EXIT.timeout);
			}
			await new Promise((resolve) => setTimeout(resolve, POLL_MS));
		}
	} finally {
		bar.finish();
	}
}

/** `build ipxe|grub|syslinux|iso [--field=value …] [--wait [--timeout=10m]]` */
export async function buildCommand(ctx: CommandContext): Promise<void> {
	const resource = findResource(await ctx.allResources(), ctx.line.positionals[1], "builder");
	if (ctx.line.options.help) return void console.log(operationHelp(`build ${resource.name}`, resource.create));
	if (!resource.create) usageError(`${resource.name} cannot be created through the API`);
	if (ctx.line.positionals.length > 2) usageError(`build ${resource.name}: unexpected "${ctx.line.positionals[2]}" (fields are --name value)`);
	const created = await ctx.api.request<BuildRow>(`/${resource.name}`, { method: "POST", json: bodyOf(ctx.line.fields, resource.create, ctx.line.options.file) });
	printRow(ctx.out, ctx.line.options.wait ? await waitForBuild(ctx, resource.name, created.id) : created);
}

/** `wait <resource> <id>`: wait for a build started earlier. */
export async function waitCommand(ctx: CommandContext): Promise<void> {
	const resource = findResource(await ctx.allResources(), ctx.line.positionals[1], "builder");
	ctx.noFields("wait");
	printRow(ctx.out, await waitForBuild(ctx, resource.name, ctx.word(2, `the id of the ${resource.name} row`)));
}
