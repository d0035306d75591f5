import { createHash } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import { DataTypes, ID_PARAM, defineService, entityMixin, type Caller, type EntityMethods, type EntityVars } from "@clusterplatform/core";

export interface ScriptRunStart {
	localnodeId: number;
	ip: string;
	artifactId: string;
	script: string;
}

export interface ScriptRunEnd {
	id: number;
	code: number | null;
	signal?: string | null;
	error?: string | null;
}

/**
 * /api/scriptruns: the audit log of every script run on a node — who (the token's name), which
 * node, when, how it ended. Append-only: written by localnodes before a script starts (a run that
 * cannot be logged does not start) and when it ends; readable with a token, never changed or
 * deleted through the API. The script itself is not kept (it may carry secrets): its SHA-256 is.
 */
/** A run's row: who ran which script (its hash) on which node, and how it ended. */
interface ScriptRunColumns {
	caller: string;
	localnodeId: number;
	ip: string;
	artifactId: string;
	scriptSha256: string;
	scriptBytes: number;
	status: "running" | "done" | "failed";
	code: number | null;
	signal: string | null;
	error: string | null;
	finishedAt: Date | null;
}

export const ScriptRunsService: ServiceSchema = defineService<EntityMethods<ScriptRunColumns>, EntityVars<ScriptRunColumns>>({
	name: "scriptruns",
	mixins: [
		entityMixin({
			name: "scriptruns",
			fields: {
				caller: { type: DataTypes.STRING(64), allowNull: false },
				localnodeId: { type: DataTypes.INTEGER, allowNull: false },
				ip: { type: DataTypes.STRING(45), allowNull: false },
				artifactId: { type: DataTypes.STRING(253), allowNull: false },
				scriptSha256: { type: DataTypes.STRING(64), allowNull: false },
				scriptBytes: { type: DataTypes.INTEGER, allowNull: false },
				status: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "running" },
				code: { type: DataTypes.INTEGER, allowNull: true },
				signal: { type: DataTypes.STRING(16), allowNull: true },
				error: { type: DataTypes.TEXT, allowNull: true },
				finishedAt: { type: DataTypes.DATE, allowNull: true },
			},
			params: {},
			// What the console and CLI look runs up by: the node's address, the node, its site; on PostgreSQL
			// also the lists' substring search by address (trigrams; see core/db.ts).
			modelOptions: {
				indexes: [
					{ name: "scriptruns_ip", fields: ["ip"] },
					{ name: "scriptruns_localnode", fields: ["localnodeId"] },
					{ name: "scriptruns_site", fields: ["artifactId"] },
					{ name: "scriptruns_ip_search", fields: ["ip"], using: "gin", operator: "gin_trgm_ops" },
				],
			},
		}),
	],
	actions: {
		create: false,
		update: false,
		remove: false,
		begin: {
			visibility: "public",
			params: { localnodeId: ID_PARAM, ip: "string", artifactId: "string", script: "string" },
			async handler(ctx: Context<ScriptRunStart, { caller?: Caller | null }>) {
				const row = await this.adapter.insert({
					caller: ctx.meta.caller?.name ?? "anonymous",
					localnodeId: ctx.params.localnodeId,
					ip: ctx.params.ip,
					artifactId: ctx.params.artifactId,
					scriptSha256: createHash("sha256").update(ctx.params.script, "utf8").digest("hex"),
					scriptBytes: Buffer.byteLength(ctx.params.script, "utf8"),
				});
				return { id: row.id };
			},
		},
		finish: {
			visibility: "public",
			params: {
				id: ID_PARAM,
				code: { type: "number", integer: true, nullable: true },
				signal: { type: "string", optional: true, nullable: true },
				error: { type: "string", optional: true, nullable: true },
			},
			async handler(ctx: Context<ScriptRunEnd>) {
				const failed = ctx.params.error != null;
				await this.adapter.updateById(ctx.params.id, {
					$set: { status: failed ? "failed" : "done", code: ctx.params.code, signal: ctx.params.signal ?? null, error: ctx.params.error?.slice(0, 2000) ?? null, finishedAt: new Date() },
				});
			},
		},
	},
});
