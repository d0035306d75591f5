import type { Context, ServiceSchema } from "moleculer";
import { ARTIFACT_ID_PARAM, ConflictError, DataTypes, ID_PARAM, Op, UnavailableError, defineService, entityMixin, invalid, respondCreated, type EntityMethods, type EntityVars, type RequestMeta } from "@clusterplatform/core";
import { ARCHITECTURES, FIRMWARES, MAC_PARAM, NAME_PARAM, UUID_PARAM, labelsParam, normalizeMac, normalizeUuid } from "./fields";
import { SPECIFICITY_RULE, couldMatchSame, matchedOn, ranks, specificity, type Criteria, type MachineFacts } from "./specificity";

export interface SelectorRow extends Criteria {
	id: number;
	name: string;
	profileId: number;
	specificity: number;
}

export interface Selection {
	selector: { id: number; name: string; profileId: number; ranks: [number, number, number, number] };
	matchedOn: string[];
	/** How many selectors matched the machine (the winner included). */
	matching: number;
}

/** Candidates read per query while looking for a tie or a match: bounded work per page. */
const PAGE = 500;

const SELECTOR_PARAMS = {
	name: NAME_PARAM,
	profileId: ID_PARAM,
	mac: { ...MAC_PARAM, optional: true },
	uuid: { ...UUID_PARAM, optional: true },
	artifactId: { ...ARTIFACT_ID_PARAM, optional: true },
	arch: { type: "enum", values: [...ARCHITECTURES], optional: true },
	firmware: { type: "enum", values: [...FIRMWARES], optional: true },
	labels: { ...labelsParam(), optional: true },
};

const SCALARS = ["mac", "uuid", "artifactId", "arch", "firmware"] as const;

/**
 * /api/selectors: which machines get which profile. The rule (also in the OpenAPI description):
 * SPECIFICITY_RULE in specificity.ts. Writes are serialized in this process so two racing writes
 * cannot both miss their tie.
 */
type SelectorColumns = Omit<SelectorRow, "id">;
/** A selector as a client gives it. */
type SelectorFields = Criteria & { name: string; profileId: number };

interface SelectorsMethods extends EntityMethods<SelectorColumns> {
	serialized<T>(work: () => Promise<T>): Promise<T>;
	nameConflict<T>(write: () => Promise<T>): Promise<T>;
	checkedSelector(ctx: Context, selector: SelectorFields, id: number | null): Promise<SelectorFields & { specificity: number }>;
	profileMustExist(ctx: Context, profileId: number): Promise<void>;
	tieWith(ctx: Context, selector: Criteria, score: number, id: number | null): Promise<SelectorRow | null>;
	oneMachineHas(ctx: Context, a: string, b: string): Promise<boolean>;
}

interface SelectorsVars extends EntityVars<SelectorColumns> {
	/** The last selector write of this process: the next one waits for it. */
	writes?: Promise<unknown>;
}

export const SelectorsService: ServiceSchema = defineService<SelectorsMethods, SelectorsVars>({
	name: "selectors",
	mixins: [
		entityMixin({
			name: "selectors",
			fields: {
				name: { type: DataTypes.STRING(253), allowNull: false, unique: true },
				profileId: { type: DataTypes.INTEGER, allowNull: false },
				mac: { type: DataTypes.STRING(17), allowNull: true },
				uuid: { type: DataTypes.STRING(36), allowNull: true },
				artifactId: { type: DataTypes.STRING(253), allowNull: true },
				arch: { type: DataTypes.STRING(8), allowNull: true },
				firmware: { type: DataTypes.STRING(8), allowNull: true },
				labels: { type: DataTypes.JSON, allowNull: false, defaultValue: {} },
				/** ranks() as one number: the order matches are tried in, and the ties looked for. */
				specificity: { type: DataTypes.INTEGER, allowNull: false },
			},
			params: SELECTOR_PARAMS,
			modelOptions: {
				indexes: [
					{ name: "selectors_specificity", fields: ["specificity", "id"] },
					{ name: "selectors_mac", fields: ["mac"] },
					{ name: "selectors_profile", fields: ["profileId"] },
				],
			},
		}),
	],
	actions: {
		create: {
			description: `Map machines to a profile by mac, uuid, artifactId (site), arch, firmware and labels. ${SPECIFICITY_RULE}`,
			async handler(ctx: Context<Record<string, unknown>, RequestMeta>) {
				return this.serialized(async () => {
					// create's params passed SELECTOR_PARAMS, which require name and profileId.
					const selector = await this.checkedSelector(ctx, normalized(ctx.params) as SelectorFields, null);
					const row = await this.nameConflict(() => this._create(ctx, selector));
					return respondCreated(ctx, row, `/api/selectors/${row.id}`);
				});
			},
		},
		update: {
			description: `Change a selector. ${SPECIFICITY_RULE}`,
			async handler(ctx: Context<Record<string, unknown> & { id: number }>) {
				return this.serialized(async () => {
					const current: SelectorRow = (await this.findOrFail(ctx.params.id)).get({ plain: true });
					const { id, ...changes } = ctx.params;
					const merged = { ...pick(current), ...normalized(changes, true) };
					const selector = await this.checkedSelector(ctx, merged, id);
					const row = await this.nameConflict(() => this.adapter.updateById(id, { $set: selector }));
					const json = await this.transformDocuments(ctx, {}, row);
					await this.entityChanged("updated", json, ctx);
					return json;
				});
			},
		},
		/** The selector a machine's boot takes, and why; null when none matches. */
		match: {
			visibility: "public",
			params: { machine: { type: "object" } },
			async handler(ctx: Context<{ machine: MachineFacts }>): Promise<Selection | null> {
				const machine = ctx.params.machine;
				const where = {
					[Op.and]: [
						{ [Op.or]: [{ mac: null }, { mac: { [Op.in]: machine.macs.length ? machine.macs : [""] } }] },
						...(["uuid", "artifactId", "arch", "firmware"] as const).map((name) => ({ [Op.or]: [{ [name]: null }, ...(machine[name] ? [{ [name]: machine[name] }] : [])] })),
					],
				};
				let winner: Selection | null = null;
				let matching = 0;
				// Most specific first; labels are compared here, page by page.
				for (let offset = 0; ; offset += PAGE) {
					const rows: SelectorRow[] = await this.adapter.model.findAll({ where, order: [["specificity", "DESC"], ["id", "ASC"]], limit: PAGE, offset, raw: true });
					for (const row of rows.map(parsedLabels)) {
						const on = matchedOn(row, machine);
						if (!on) continue;
						matching++;
						winner ??= { selector: { id: row.id, name: row.name, profileId: row.profileId, ranks: ranks(row) }, matchedOn: on, matching: 0 };
					}
					if (rows.length < PAGE) break;
				}
				return winner ? { ...winner, matching } : null;
			},
		},
	},
	methods: {
		/** One selector write at a time in this process: the tie check and the write go together. */
		serialized<T>(work: () => Promise<T>): Promise<T> {
			const run = (this.writes ?? Promise.resolve()).then(work, work);
			this.writes = run.catch(() => undefined);
			return run;
		},
		async nameConflict<T>(write: () => Promise<T>): Promise<T> {
			try {
				return await write();
			} catch (err) {
				if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
				throw new ConflictError("another selector has this name", { field: "name" });
			}
		},
		async checkedSelector(ctx: Context, selector: SelectorFields, id: number | null) {
			await this.profileMustExist(ctx, selector.profileId);
			const score = specificity(selector);
			const tie = await this.tieWith(ctx, selector, score, id);
			if (tie) {
				throw new ConflictError(`selector "${tie.name}" (${tie.id}) could match the same machines with the same specificity (${ranks(selector).join(", ")}): make one more specific. ${SPECIFICITY_RULE}`, { field: "specificity", selector: tie.id });
			}
			return { ...selector, specificity: score };
		},
		async profileMustExist(ctx: Context, profileId: number): Promise<void> {
			const profile = await ctx.call("profiles.byId", { id: profileId }).catch((err: Error) => {
				if (err.name === "ServiceNotFoundError") throw new UnavailableError("the profiles service is not running: profileId cannot be checked");
				throw err;
			});
			if (!profile) invalid("profileId", `no profile ${profileId}`);
		},
		/** A selector of equal specificity that some machine could match together with this one. */
		async tieWith(ctx: Context, selector: Criteria, score: number, id: number | null): Promise<SelectorRow | null> {
			// A candidate ties unless a field both name differs: those that differ on a scalar are left to SQL (MACs aside, see below).
			const where: Record<string | symbol, unknown> = { specificity: score, ...(id ? { id: { [Op.ne]: id } } : {}) };
			const and: unknown[] = [];
			for (const name of SCALARS) {
				if (selector[name] && name !== "mac") and.push({ [Op.or]: [{ [name]: null }, { [name]: selector[name] }] });
			}
			if (and.length) where[Op.and] = and;
			for (let offset = 0; ; offset += PAGE) {
				const rows: SelectorRow[] = await this.adapter.model.findAll({ where, order: [["id", "ASC"]], limit: PAGE, offset, raw: true });
				for (const row of rows.map(parsedLabels)) {
					const bothMacs = Boolean(selector.mac && row.mac && selector.mac !== row.mac);
					if (couldMatchSame(selector, row, bothMacs && (await this.oneMachineHas(ctx, selector.mac!, row.mac!)))) return row;
				}
				if (rows.length < PAGE) return null;
			}
		},
		/** Two MACs of one machine: selectors naming each could both match it. */
		async oneMachineHas(ctx: Context, a: string, b: string): Promise<boolean> {
			const owners: (number | null)[] = await Promise.all([a, b].map((mac) => ctx.call<number | null, { mac: string }>("machines.idByMac", { mac }).catch(() => null)));
			return owners[0] !== null && owners[0] === owners[1];
		},
	},
});

/** Criteria as stored: MACs and UUIDs in one spelling; an update's "" clears a criterion. */
function normalized(params: Record<string, unknown>, update = false): Partial<SelectorFields> {
	const out: Record<string, unknown> = {};
	for (const [name, value] of Object.entries(params)) {
		if (value === undefined || !(name in SELECTOR_PARAMS)) continue;
		if (value === "") {
			if (update) out[name] = null;
			continue;
		}
		out[name] = name === "mac" ? normalizeMac(value as string) : name === "uuid" ? normalizeUuid(value as string) : value;
	}
	// Only SELECTOR_PARAMS' names, with the values they were validated as.
	return out as Partial<SelectorFields>;
}

/** The row's client fields (not its id, specificity or timestamps); an unset criterion is null. */
function pick(row: SelectorRow): SelectorFields {
	const { name, profileId, mac, uuid, artifactId, arch, firmware, labels } = row;
	return { name, profileId, mac: mac ?? null, uuid: uuid ?? null, artifactId: artifactId ?? null, arch: arch ?? null, firmware: firmware ?? null, labels: labels ?? null };
}

/** raw rows carry JSON as text on SQLite. */
function parsedLabels(row: SelectorRow): SelectorRow {
	return typeof row.labels === "string" ? { ...row, labels: JSON.parse(row.labels) } : row;
}
