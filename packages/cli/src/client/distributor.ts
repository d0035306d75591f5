import type { CommandContext } from "./context";
import { segment } from "./context";
import { CliError, EXIT, usageError } from "./errors";
import { bodyOf } from "./fields";
import { printRow } from "./output";
import { findResource, operationHelp } from "./resources";

/** Configuring a worker downloads two iPXE binaries and restarts dnsmasq: the API allows 180 s. */
const COMMAND_TIMEOUT_MS = 200_000;

interface DistributorRow {
	id: number;
	artifactId: string;
	online: boolean;
}

/** A distributor by row id, or by its site tag (artifactId) when exactly one online distributor has it. */
export async function distributorId(ctx: CommandContext, ref: string): Promise<number> {
	if (/^\d+$/.test(ref)) return Number(ref);
	const page = await ctx.api.request<{ rows: DistributorRow[] }>("/distributors", { query: [["search", ref], ["searchFields", "artifactId"], ["pageSize", "1000"]] });
	const rows = page.rows.filter((row) => row.artifactId === ref);
	const online = rows.filter((row) => row.online);
	const candidates = online.length ? online : rows;
	if (!candidates.length) throw new CliError(`no distributor has the site tag "${ref}"`, EXIT.notFound);
	if (candidates.length > 1) usageError(`${candidates.length} distributors serve "${ref}" (ids ${candidates.map((r) => r.id).join(", ")}): name one by id`);
	return candidates[0]!.id;
}

/** `distributor update <id|artifactId> --ipxePxeUefiUrl … --ipxePxeBiosUrl … --device … --range …`, `distributor on|off <id|artifactId>` */
export async function distributorCommand(ctx: CommandContext): Promise<void> {
	const verb = ctx.word(1, "update, on or off");
	const resource = findResource(await ctx.allResources(), "distributors");
	if (verb === "update") {
		if (ctx.line.options.help) return void console.log(operationHelp("distributor update", resource.update));
		const id = await distributorId(ctx, ctx.word(2, "the distributor (id or site tag)"));
		return printRow(ctx.out, await ctx.api.request(`/distributors/${id}`, { method: "PUT", json: bodyOf(ctx.line.fields, resource.update), timeoutMs: COMMAND_TIMEOUT_MS }));
	}
	if (verb === "on" || verb === "off") {
		ctx.noFields(`distributor ${verb}`);
		const id = await distributorId(ctx, ctx.word(2, "the distributor (id or site tag)"));
		return printRow(ctx.out, await ctx.api.request(`/distributors/${segment(String(id))}/status`, { method: "PUT", json: { on: verb === "on" }, timeoutMs: COMMAND_TIMEOUT_MS }));
	}
	usageError(`distributor ${verb}: use update, on or off`);
}
