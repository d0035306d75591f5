import type { CommandContext } from "./context";
import { segment } from "./context";
import { usageError } from "./errors";
import { bodyOf, queryOf } from "./fields";
import { printList, printRow } from "./output";
import { findResource, operationHelp, type Resource } from "./resources";

/** Generic list/get/create/update/delete over any resource the gateway describes. */

async function resourceAt(ctx: CommandContext, index: number): Promise<Resource> {
	return findResource(await ctx.allResources(), ctx.line.positionals[index]);
}

function requireOp<T>(op: T | undefined, resource: Resource, verb: string): T {
	if (!op) usageError(`${resource.name} cannot be ${verb} through the API`);
	return op;
}

export async function listCommand(ctx: CommandContext): Promise<void> {
	const resource = await resourceAt(ctx, 1);
	if (ctx.line.options.help) return void console.log(operationHelp(`list ${resource.name}`, resource.list));
	const op = requireOp(resource.list, resource, "listed");
	printList(ctx.out, await ctx.api.request(`/${resource.name}`, { query: queryOf(ctx.line.fields, op) }));
}

export async function getCommand(ctx: CommandContext): Promise<void> {
	const resource = await resourceAt(ctx, 1);
	const id = ctx.line.positionals[2];
	// A resource without rows (the sshkey generator) answers GET /api/<name> itself.
	if (id === undefined) {
		if (resource.get || !resource.list) usageError(`get ${resource.name} <id>: missing the id`);
		return printRow(ctx.out, await ctx.api.request(`/${resource.name}`, { query: queryOf(ctx.line.fields, resource.list) }));
	}
	requireOp(resource.get, resource, "read by id");
	ctx.noFields("get");
	printRow(ctx.out, await ctx.api.request(`/${resource.name}/${segment(id)}`));
}

export async function createCommand(ctx: CommandContext): Promise<void> {
	const resource = await resourceAt(ctx, 1);
	if (ctx.line.options.help) return void console.log(operationHelp(`create ${resource.name}`, resource.create));
	const op = requireOp(resource.create, resource, "created");
	printRow(ctx.out, await ctx.api.request(`/${resource.name}`, { method: "POST", json: bodyOf(ctx.line.fields, op, ctx.line.options.file) }));
}

export async function updateCommand(ctx: CommandContext): Promise<void> {
	const resource = await resourceAt(ctx, 1);
	if (ctx.line.options.help) return void console.log(operationHelp(`update ${resource.name}`, resource.update));
	const op = requireOp(resource.update, resource, "updated");
	const id = ctx.word(2, `the id of the ${resource.name} row to update`);
	printRow(ctx.out, await ctx.api.request(`/${resource.name}/${segment(id)}`, { method: "PUT", json: bodyOf(ctx.line.fields, op, ctx.line.options.file) }));
}

export async function deleteCommand(ctx: CommandContext): Promise<void> {
	const resource = await resourceAt(ctx, 1);
	requireOp(resource.remove, resource, "deleted");
	ctx.noFields("delete");
	const ids = ctx.line.positionals.slice(2);
	if (!ids.length) usageError(`delete ${resource.name} <id…>: missing the id`);
	const removed = [];
	for (const id of ids) removed.push(await ctx.api.request(`/${resource.name}/${segment(id)}`, { method: "DELETE" }));
	if (ctx.out.json) return printRow(ctx.out, removed.length === 1 ? removed[0] : removed);
	for (const row of removed) process.stdout.write(ctx.out.quiet ? `${row?.id}\n` : `deleted ${resource.name} ${row?.id}\n`);
}

/** What this gateway serves, and what the CLI can do with each. */
export async function resourcesCommand(ctx: CommandContext): Promise<void> {
	const resources = [...(await ctx.allResources()).values()].sort((a, b) => a.name.localeCompare(b.name));
	const verbs = (r: Resource) =>
		[r.list && "list", r.get && "get", r.create && "create", r.update && "update", r.remove && "delete", ...Object.keys(r.actions).map((a) => `${a}`)].filter(Boolean).join(" ");
	if (ctx.out.json) return printRow(ctx.out, resources.map((r) => ({ name: r.name, operations: verbs(r).split(" ") })));
	const width = Math.max(...resources.map((r) => r.name.length));
	for (const r of resources) console.log(`${r.name.padEnd(width)}  ${verbs(r)}`);
}

/**
 * `action <resource> <id> <name> [--<field> <value> …]`: a row's own routes (PUT /api/mirrors/3/sync,
 * GET /api/dnses/1/log, …), as the gateway lists them. With several methods on one route, GET is
 * taken when no fields are given.
 */
export async function actionCommand(ctx: CommandContext): Promise<void> {
	const resource = await resourceAt(ctx, 1);
	const names = Object.keys(resource.actions);
	const name = ctx.line.positionals[3];
	if (!name || !resource.actions[name]) usageError(`action ${resource.name} <id> <name>: ${names.length ? `one of ${names.join(", ")}` : `${resource.name} has no actions`}`);
	const methods = resource.actions[name]!;
	const method = Object.keys(methods).length === 1 ? Object.keys(methods)[0]! : methods.get && !ctx.line.fields.length ? "get" : (Object.keys(methods).find((m) => m !== "get") ?? "get");
	const op = methods[method];
	if (ctx.line.options.help) return void console.log(operationHelp(`action ${resource.name} <id> ${name}`, op));
	const id = ctx.word(2, `the id of the ${resource.name} row`);
	const path = `/${resource.name}/${segment(id)}/${segment(name)}`;
	const answer = method === "get"
		? await ctx.api.request(path, { query: queryOf(ctx.line.fields, op) })
		: await ctx.api.request(path, { method: method.toUpperCase(), json: bodyOf(ctx.line.fields, op, ctx.line.options.file), timeoutMs: 300_000 });
	printRow(ctx.out, answer);
}
