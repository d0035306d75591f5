import type { Context, ServiceSchema } from "moleculer";
import { ConflictError, DataTypes, ID_PARAM, UnavailableError, defineService, entityMixin, invalid, respondCreated, textParam, type EntityMethods, type EntityVars, type RequestMeta } from "@clusterplatform/core";
import { NAME_PARAM } from "./fields";
import { RESERVED_NAMES, TEMPLATE_FIELDS, VARIABLE_NAME, templateProblem, type TemplateField } from "./templates";

const TEMPLATE_BYTES = 256 * 1024;
const MAX_VARIABLES = 64;
const VARIABLE_VALUE_BYTES = 4096;

export interface ProfileRow {
	id: number;
	name: string;
	description: string | null;
	ipxeScript: string | null;
	mainscriptId: number | null;
	subscriptId: number | null;
	kickstart: string | null;
	prebootScript: string | null;
	postbootScript: string | null;
	variables: Record<string, string>;
}

const VARIABLES_PARAM = {
	type: "record",
	key: { type: "string", pattern: VARIABLE_NAME, messages: { stringPattern: "The 'variables' names must be letters, digits or '_' (at most 64), not starting with a digit." } },
	value: textParam(VARIABLE_VALUE_BYTES, { empty: true }),
	optional: true,
};

/** A mainscript's or subscript's id; 0 clears it (to boot another source instead). */
const REFERENCE_PARAM = { type: "number", integer: true, min: 0, convert: true, optional: true } as const;

const PROFILE_PARAMS = {
	name: NAME_PARAM,
	description: { type: "string", max: 500, optional: true },
	ipxeScript: textParam(TEMPLATE_BYTES, { optional: true, empty: true }),
	mainscriptId: REFERENCE_PARAM,
	subscriptId: REFERENCE_PARAM,
	kickstart: textParam(TEMPLATE_BYTES, { optional: true, empty: true }),
	prebootScript: textParam(TEMPLATE_BYTES, { optional: true, empty: true }),
	postbootScript: textParam(TEMPLATE_BYTES, { optional: true, empty: true }),
	variables: VARIABLES_PARAM,
};

/** Fields an update clears with an empty string or 0 (the entity mixin refuses null). */
const CLEARABLE = ["description", "ipxeScript", "kickstart", "prebootScript", "postbootScript"] as const;
const IPXE_SOURCES = ["ipxeScript", "mainscriptId", "subscriptId"] as const;

const given = (value: unknown) => value !== null && value !== undefined && value !== "" && value !== 0;

/**
 * /api/profiles: what a machine gets. iPXE from exactly one of a template (`ipxeScript`) or a
 * mainscript or subscript (chained as it is); a kickstart and pre- and post-boot scripts, as
 * templates; `variables` the templates may name. Templates are Mustache (logic-less; sections only
 * test a value) rendered unescaped with the machine's values; a name neither the machine nor the
 * variables can give is refused here (422), a value a machine lacks fails that machine's boot.
 */
type ProfileColumns = Omit<ProfileRow, "id">;

interface ProfilesMethods extends EntityMethods<ProfileColumns> {
	conflictAsName<T>(write: () => Promise<T>): Promise<T>;
	checkedProfile(ctx: Context, profile: StoredProfile): Promise<StoredProfile>;
	mustExist(ctx: Context, field: string, registry: string, id: number): Promise<void>;
}

export const ProfilesService: ServiceSchema = defineService<ProfilesMethods, EntityVars<ProfileColumns>>({
	name: "profiles",
	mixins: [
		entityMixin({
			name: "profiles",
			fields: {
				name: { type: DataTypes.STRING(253), allowNull: false, unique: true },
				description: { type: DataTypes.STRING(500), allowNull: true },
				ipxeScript: { type: DataTypes.TEXT, allowNull: true },
				mainscriptId: { type: DataTypes.INTEGER, allowNull: true },
				subscriptId: { type: DataTypes.INTEGER, allowNull: true },
				kickstart: { type: DataTypes.TEXT, allowNull: true },
				prebootScript: { type: DataTypes.TEXT, allowNull: true },
				postbootScript: { type: DataTypes.TEXT, allowNull: true },
				variables: { type: DataTypes.JSON, allowNull: false, defaultValue: {} },
			},
			params: PROFILE_PARAMS,
		}),
	],
	actions: {
		create: {
			description: "Make a profile: iPXE from one of ipxeScript (a template starting #!ipxe), mainscriptId or subscriptId; kickstart, prebootScript, postbootScript templates; variables. A template naming a value neither a machine nor the variables give is refused (422)",
			async handler(ctx: Context<Partial<ProfileRow>, RequestMeta>) {
				const profile = await this.checkedProfile(ctx, { ...emptyProfile(), ...clearedEmpty(ctx.params) });
				const row = await this.conflictAsName(() => this._create(ctx, profile));
				return respondCreated(ctx, row, `/api/profiles/${row.id}`);
			},
		},
		update: {
			async handler(ctx: Context<Partial<ProfileRow> & { id: number }>) {
				const current: ProfileRow = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				const { id, ...changes } = ctx.params;
				// The profile as it will be, checked whole: removing a variable a template names is refused too.
				const next = await this.checkedProfile(ctx, { ...storedFields(current), ...clearedEmpty(changes) });
				const row = await this.conflictAsName(() => this.adapter.updateById(id, { $set: next }));
				const json = await this.transformDocuments(ctx, {}, row);
				await this.entityChanged("updated", json, ctx);
				return json;
			},
		},
		remove: {
			hooks: {
				async before(ctx: Context<{ id: number }>) {
					const using = await ctx.call<number, object>("selectors.count", { query: { profileId: ctx.params.id } }).catch((err: Error) => {
						if (err.name === "ServiceNotFoundError") return 0;
						throw err;
					});
					if (using > 0) throw new ConflictError(`profile ${ctx.params.id} is used by ${using} selector(s): remove or change them first`, { field: "id", selectors: using });
					const pinned = await ctx.call<number, object>("machines.count", { query: { profileId: ctx.params.id } }).catch((err: Error) => {
						if (err.name === "ServiceNotFoundError") return 0;
						throw err;
					});
					if (pinned > 0) throw new ConflictError(`profile ${ctx.params.id} is pinned on ${pinned} machine(s): unpin them first (PUT /api/machines/:id {"profileId": 0})`, { field: "id", machines: pinned });
				},
			},
		},
		/** The profile whole, for the machines service (plans and boots). */
		byId: {
			visibility: "public",
			params: { id: ID_PARAM },
			async handler(ctx: Context<{ id: number }>): Promise<ProfileRow | null> {
				const row = await this.adapter.findById(ctx.params.id);
				return row ? row.get({ plain: true }) : null;
			},
		},
	},
	methods: {
		async conflictAsName<T>(write: () => Promise<T>): Promise<T> {
			try {
				return await write();
			} catch (err) {
				if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
				throw new ConflictError("another profile has this name", { field: "name" });
			}
		},
		/** The profile checked whole (422 naming the field), ready to store. */
		async checkedProfile(ctx: Context, profile: StoredProfile): Promise<StoredProfile> {
			const sources = IPXE_SOURCES.filter((field) => given(profile[field]));
			if (sources.length !== 1) invalid(sources[1] ?? "ipxeScript", `a profile boots exactly one of ipxeScript, mainscriptId or subscriptId (${sources.length === 0 ? "none" : sources.join(" and ")} given)`);
			if (profile.ipxeScript && !/^#!ipxe\b/.test(profile.ipxeScript)) invalid("ipxeScript", "must start with #!ipxe (iPXE runs nothing else)");
			const variables = profile.variables ?? {};
			const names = Object.keys(variables);
			if (names.length > MAX_VARIABLES) invalid("variables", `has ${names.length} variables; at most ${MAX_VARIABLES}`);
			for (const name of names) if (RESERVED_NAMES.has(name)) invalid("variables", `"${name}" is a machine's own value: name the variable otherwise`);
			const scripts = new Set<TemplateField>(TEMPLATE_FIELDS.filter((field) => given(profile[field])));
			for (const field of scripts) {
				const problem = templateProblem(field, profile[field]!, variables, scripts);
				if (problem) invalid(field, problem);
			}
			for (const [field, registry] of [["mainscriptId", "mainscripts"], ["subscriptId", "subscripts"]] as const) {
				if (given(profile[field])) await this.mustExist(ctx, field, registry, profile[field]!);
			}
			return { ...profile, variables };
		},
		async mustExist(ctx: Context, field: string, registry: string, id: number): Promise<void> {
			try {
				await ctx.call(`${registry}.get`, { id }, { meta: { accept: "application/json" } });
			} catch (err) {
				if ((err as Error).name === "NotFoundError") invalid(field, `no ${registry.replace(/s$/, "")} ${id}`);
				if ((err as Error).name === "ServiceNotFoundError") throw new UnavailableError(`the ${registry} service is not running: ${field} cannot be checked`);
				throw err;
			}
		},
	},
});

type StoredProfile = Omit<ProfileRow, "id">;

function emptyProfile(): StoredProfile {
	return { name: "", description: null, ipxeScript: null, mainscriptId: null, subscriptId: null, kickstart: null, prebootScript: null, postbootScript: null, variables: {} };
}

function storedFields(row: ProfileRow): StoredProfile {
	return Object.fromEntries(Object.keys(PROFILE_PARAMS).map((name) => [name, row[name as keyof ProfileRow]])) as StoredProfile;
}

/** An update's "" (or 0 for a reference) clears the field. */
function clearedEmpty(changes: Partial<ProfileRow>): Partial<StoredProfile> {
	const out: Record<string, unknown> = {};
	for (const [name, value] of Object.entries(changes)) {
		if (value === undefined) continue;
		out[name] = ((CLEARABLE as readonly string[]).includes(name) && value === "") || (IPXE_SOURCES.includes(name as never) && value === 0) ? null : value;
	}
	return out as Partial<StoredProfile>;
}
