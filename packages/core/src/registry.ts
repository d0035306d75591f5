import type { Context, Service, ServiceSchema } from "moleculer";
import type { FindOptions, Model, ModelAttributes, ModelOptions, ModelStatic, WhereOptions } from "sequelize";
import { DataTypes, dbMixin } from "./db";
import { ConflictError, invalid, NotFoundError } from "./errors";
import { ID_PARAM, checkListParams, respondCreated, respondText, textParam, wantsJson, type RequestMeta } from "./rest";
import { defineMixin } from "./service-schema";

/** Sequelize's where clause, for services that query their model (they do not depend on Sequelize themselves). */
export type { WhereOptions } from "sequelize";

/** Columns every entity row has. */
export interface SystemColumns {
	id: number;
	createdAt: Date;
	updatedAt: Date;
}

/**
 * A row as moleculer-db's Sequelize adapter hands it over: a model instance (`get()` for its
 * columns) whose columns are also readable as properties (Sequelize defines a getter for each).
 */
export type EntityRow<Columns extends object = Record<string, unknown>> = Model<Columns & SystemColumns, Partial<Columns>> & Columns & SystemColumns;

/** A row as the API answers it: the columns a caller may read (hidden fields are left out). */
export type EntityJson<Columns extends object = Record<string, unknown>> = Partial<Columns> & SystemColumns;

/** What moleculer-db's Sequelize adapter (`this.adapter`) does for an entity's service. */
export interface EntityAdapter<Columns extends object = Record<string, unknown>> {
	model: ModelStatic<EntityRow<Columns>>;
	findById(id: number): Promise<EntityRow<Columns> | null>;
	// Queries stay loosely typed: Sequelize cannot check a where clause on columns a generic mixin names by variable.
	findOne(options: FindOptions): Promise<EntityRow<Columns> | null>;
	find(filters: { query?: WhereOptions; limit?: number; sort?: string | string[] }): Promise<EntityRow<Columns>[]>;
	insert(row: Partial<Columns>): Promise<EntityRow<Columns>>;
	updateById(id: number, update: { $set: Partial<Columns> }): Promise<EntityRow<Columns>>;
	removeById(id: number): Promise<unknown>;
}

/** A page of `list`. */
export interface EntityPage<Columns extends object = Record<string, unknown>> {
	rows: EntityJson<Columns>[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}

/** What an entity's service can do (entityMixin's own methods and moleculer-db's). */
export interface EntityMethods<Columns extends object = Record<string, unknown>> {
	/** The row, or a 404 naming the entity. */
	findOrFail(id: number): Promise<EntityRow<Columns>>;
	/** The params a client may send for a row (the entity's `params`), without those left out. */
	pickFields(params: Record<string, unknown>): Partial<Columns>;
	transformDocuments(ctx: Context, params: object, row: EntityRow<Columns>): Promise<EntityJson<Columns>>;
	/** Tells caches (moleculer-db's `cache.clean.<service>`) and listeners that a row changed. */
	entityChanged(type: "created" | "updated" | "removed", json: unknown, ctx: Context): Promise<void>;
	_create(ctx: Context, params: object): Promise<EntityJson<Columns>>;
	_list(ctx: Context, params: object): Promise<EntityPage<Columns>>;
}

export interface EntityVars<Columns extends object = Record<string, unknown>> {
	adapter: EntityAdapter<Columns>;
}

/** `this` in an entity service's own actions and methods. */
export type EntityService<Columns extends object = Record<string, unknown>> = Service & EntityMethods<Columns> & EntityVars<Columns>;

export const MAX_TEXT_BYTES = 1024 * 1024;

export interface EntityOptions {
	/** Table and REST name, e.g. "mainscripts". */
	name: string;
	fields: ModelAttributes;
	/** Validation rules of the fields a client may send on create (and, all optional, on update). */
	params: Record<string, unknown>;
	/** Fields that never leave the service in lists and JSON (e.g. sealed key material); never sorted or searched by. */
	hiddenFields?: string[];
	/**
	 * Fields secret in some rows only (a private key's text beside public keys' text): shown where the
	 * service allows, never sorted or searched by.
	 */
	secretFields?: string[];
	/** Sequelize model options, e.g. indexes on columns the service looks rows up by. */
	modelOptions?: ModelOptions;
}

const SYSTEM_COLUMNS = ["id", "createdAt", "updatedAt"];

const TEXT_TYPES = ["STRING", "TEXT", "CHAR", "CITEXT", "UUID"];

function isTextColumn(fields: ModelAttributes, column: string): boolean {
	const attribute = (fields as Record<string, unknown>)[column];
	const type = (attribute && typeof attribute === "object" && "type" in attribute ? (attribute as { type: unknown }).type : attribute) as { key?: string } | undefined;
	return TEXT_TYPES.includes(String(type?.key ?? ""));
}

/** A write that a unique index refuses is the client's conflict (409 naming the fields), not a 500. */
async function uniqueOrConflict<T>(write: () => Promise<T>): Promise<T> {
	try {
		return await write();
	} catch (err) {
		if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
		const fields = Object.keys((err as { fields?: Record<string, unknown> }).fields ?? {});
		throw new ConflictError(`another row has the same ${fields.join(" and ") || "unique value"}`, { fields });
	}
}

const FORBIDDEN = { type: "forbidden" } as const;

/**
 * moleculer-db's list and get also take raw Sequelize queries, field projections and population:
 * internal tools, not a client's. (A `query` of {"$gt": ""} would otherwise reach the database.)
 */
const MOLECULER_DB_INTERNALS = { query: FORBIDDEN, populate: FORBIDDEN, fields: FORBIDDEN, excludeFields: FORBIDDEN, mapping: FORBIDDEN, iSearch: FORBIDDEN };

/** Paging within what a database can count to. */
const PAGING = {
	page: { type: "number", integer: true, min: 1, max: 1_000_000, convert: true, optional: true },
	pageSize: { type: "number", integer: true, min: 1, max: 1000, convert: true, optional: true },
};

/**
 * fastest-validator lets `null` through wherever a field is optional; no column or build input
 * here means anything by null, so it is refused by name instead of failing deeper down.
 */
function refuseNulls(fields: readonly string[]) {
	return (ctx: Context<Record<string, unknown>>) => {
		for (const field of fields) if (ctx.params[field] === null) invalid(field, "must not be null");
	};
}

/** An update's rules: every field optional, and no defaults (a field left out stays as it is). */
function optionalRules(params: Record<string, unknown>): Record<string, unknown> {
	return Object.fromEntries(
		Object.entries(params).map(([name, rule]) => {
			const { default: _createDefault, ...updateRule } = rule as Record<string, unknown>;
			return [name, { ...updateRule, optional: true }];
		}),
	);
}

/**
 * A REST entity on the db mixin: list/get/create/update/remove under /api/<name>, validated
 * params (unknown fields are refused), sort and search restricted to columns a caller may read,
 * 404s for missing ids. Services add their own actions and hooks on top.
 */
export function entityMixin(options: EntityOptions): Partial<ServiceSchema> {
	const columns = [...SYSTEM_COLUMNS, ...Object.keys(options.fields)];
	const hidden = options.hiddenFields ?? [];
	const queryable = columns.filter((c) => !hidden.includes(c) && !(options.secretFields ?? []).includes(c));
	// A search is a LIKE: text columns only (PostgreSQL has no LIKE on numbers, dates or booleans).
	const searchable = queryable.filter((c) => isTextColumn(options.fields, c));
	return defineMixin<EntityMethods, EntityVars>({
		mixins: [dbMixin({ name: options.name, define: options.fields, options: options.modelOptions })],
		settings: {
			rest: `/${options.name}`,
			fields: columns.filter((c) => !hidden.includes(c)),
		},
		actions: {
			list: {
				rest: "GET /",
				params: { ...MOLECULER_DB_INTERNALS, ...PAGING, $$strict: true },
				hooks: { before: (ctx: Context<{ sort?: unknown; searchFields?: unknown }>) => checkListParams(ctx.params, queryable, searchable) },
			},
			get: {
				rest: "GET /:id",
				params: { id: ID_PARAM, ...MOLECULER_DB_INTERNALS, $$strict: true },
				async handler(ctx: Context<{ id: number }, RequestMeta>) {
					return this.transformDocuments(ctx, {}, await this.findOrFail(ctx.params.id));
				},
			},
			create: {
				rest: "POST /",
				params: { ...options.params, $$strict: true },
				async handler(ctx: Context<Record<string, unknown>, RequestMeta>) {
					const row = await uniqueOrConflict(() => this._create(ctx, this.pickFields(ctx.params)));
					return respondCreated(ctx, row, `/api/${options.name}/${row.id}`);
				},
			},
			update: {
				rest: "PUT /:id",
				params: { id: ID_PARAM, ...optionalRules(options.params), $$strict: true },
				async handler(ctx: Context<Record<string, unknown> & { id: number }>) {
					await this.findOrFail(ctx.params.id);
					const changes = this.pickFields(ctx.params);
					const row = await uniqueOrConflict(() => this.adapter.updateById(ctx.params.id, { $set: changes }));
					const json = await this.transformDocuments(ctx, {}, row);
					await this.entityChanged("updated", json, ctx);
					return json;
				},
			},
			remove: {
				rest: "DELETE /:id",
				params: { id: ID_PARAM },
				async handler(ctx: Context<{ id: number }>) {
					const row = await this.findOrFail(ctx.params.id);
					const json = await this.transformDocuments(ctx, {}, row);
					await this.adapter.removeById(ctx.params.id);
					await this.entityChanged("removed", json, ctx);
					return json;
				},
			},
		},
		hooks: {
			before: { create: refuseNulls(Object.keys(options.params)), update: refuseNulls(Object.keys(options.params)) },
		},
		methods: {
			async findOrFail(id: number) {
				const row = await this.adapter.findById(id);
				if (!row) throw new NotFoundError(options.name.replace(/s$/, ""), id);
				return row;
			},
			pickFields(params: Record<string, unknown>) {
				return Object.fromEntries(Object.keys(options.params).filter((k) => params[k] !== undefined).map((k) => [k, params[k]]));
			},
		},
	});
}

/**
 * A text registry (mainscripts, subscripts, kickstarts, pre- and post-boot scripts): rows of
 * {id, text}; GET /:id answers the raw text, which is what iPXE `chain`, Anaconda `inst.ks=` and
 * `curl | bash` fetch, or the row as JSON when asked with Accept: application/json.
 */
export function textRegistryMixin(name: string, extra: Pick<EntityOptions, "fields" | "params" | "hiddenFields" | "secretFields"> = { fields: {}, params: {} }): Partial<ServiceSchema> {
	return defineMixin<EntityMethods<{ text: string }>, EntityVars<{ text: string }>>({
		mixins: [
			entityMixin({
				name,
				fields: { text: { type: DataTypes.TEXT, allowNull: false }, ...extra.fields },
				params: { text: textParam(MAX_TEXT_BYTES), ...extra.params },
				hiddenFields: extra.hiddenFields,
				secretFields: extra.secretFields,
			}),
		],
		actions: {
			get: {
				async handler(ctx: Context<{ id: number }, RequestMeta>) {
					const row = await this.findOrFail(ctx.params.id);
					if (!wantsJson(ctx)) return respondText(ctx, row.get("text"));
					return this.transformDocuments(ctx, {}, row);
				},
			},
		},
	});
}
