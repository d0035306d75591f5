import { Op, QueryTypes, Transaction, literal, type Model, type ModelOptions, type ModelStatic, type Sequelize, type WhereOptions } from "sequelize";
import { ConfigError } from "./errors";

/**
 * The lists' substring search (`search=…&searchFields=…`: LIKE '%…%' with each database's own case
 * rule, `%` and `_` in the term being LIKE's wildcards) through an index where a model declares one.
 *
 * A model declares a column substring-searchable with a trigram index,
 * `{ name: "<table>_<column>_search", fields: [column], using: "gin", operator: "gin_trgm_ops" }`:
 * - PostgreSQL: that GIN index itself (pg_trgm), which serves LIKE '%…%';
 * - SQLite: an FTS5 table of the column's trigrams, `<table>_fts_<column>`, kept in step with the
 *   table by triggers and made (and filled from the rows there) at start when it is missing or
 *   declared otherwise, so an older database is indexed when it opens. A search first narrows the
 *   rows to those holding the term's rarest trigrams, when that pays, and LIKE decides among them.
 * A search on a column without one is the same LIKE, scanning the table: the answers are the same.
 */

type IndexDeclaration = NonNullable<ModelOptions["indexes"]>[number];

const TRIGRAM_OPERATOR = "gin_trgm_ops";

export function isTrigramIndex(index: IndexDeclaration): boolean {
	return index.operator === TRIGRAM_OPERATOR;
}

/** The columns a model's trigram indexes make substring-searchable. */
export function substringSearchColumns(indexes: readonly IndexDeclaration[]): string[] {
	const columns = indexes.filter(isTrigramIndex).flatMap((index) => (index.fields ?? []).flatMap((field) => (typeof field === "string" ? [field] : "name" in field ? [field.name] : [])));
	return [...new Set(columns)];
}

/** Whether pg_trgm is there (or was made) in a PostgreSQL database, asked once per process and database. */
const trigramReady = new WeakMap<Sequelize, Promise<boolean>>();

function pgTrigram(sequelize: Sequelize): Promise<boolean> {
	let ready = trigramReady.get(sequelize);
	if (!ready) {
		ready = sequelize.query("CREATE EXTENSION IF NOT EXISTS pg_trgm").then(
			() => true,
			// Two processes creating it at once: one wins, and it is there.
			() => sequelize.query("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").then(([rows]) => rows.length > 0, () => false),
		);
		trigramReady.set(sequelize, ready);
	}
	return ready;
}

/**
 * The indexes Sequelize should make for a model: trigram indexes only on PostgreSQL with pg_trgm
 * (contrib, trusted since PostgreSQL 13: the database's owner may create it). Where it cannot be
 * had they are left out with a warning and those searches scan the table. On SQLite they are the
 * FTS5 table's business (syncSubstringIndex), never a Sequelize index.
 */
export async function indexesToMake(sequelize: Sequelize, table: string, indexes: IndexDeclaration[], logger: { warn(message: string): void }): Promise<IndexDeclaration[]> {
	const plain = indexes.filter((index) => !isTrigramIndex(index));
	if (plain.length === indexes.length) return [...indexes];
	if (sequelize.getDialect() !== "postgres") return plain;
	if (await pgTrigram(sequelize)) return [...indexes];
	// Asked again next time (the database may have been unreachable); this start goes without them.
	trigramReady.delete(sequelize);
	logger.warn(`table ${table}: no pg_trgm extension in this database (CREATE EXTENSION pg_trgm needs contrib and the database owner): its searches scan the table`);
	return plain;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

function quoted(name: string): string {
	if (!IDENTIFIER.test(name)) throw new ConfigError(`"${name}" cannot name a table or column of a substring-search index (letters, digits and _ only)`);
	return `"${name}"`;
}

/** The FTS5 table of one searchable column on SQLite: one per column, so a trigram's rows are that column's. */
const ftsTable = (table: string, column: string) => `${table}_fts_${column}`;
/** The triggers that keep a table's FTS5 tables in step with it. */
const ftsTrigger = (table: string, event: "insert" | "delete" | "update") => `${table}_fts__${event}`;

interface SchemaObject {
	name: string;
	type: "table" | "trigger";
	sql: string;
}

/** The schema objects of a table's FTS5 indexes, as sqlite_master keeps their SQL. */
function ftsSchema(table: string, key: string, columns: readonly string[]): SchemaObject[] {
	const [t, id] = [quoted(table), quoted(key)];
	const insert = (row: "new") => columns.map((c) => `INSERT INTO ${quoted(ftsTable(table, c))}(rowid, ${quoted(c)}) VALUES (${row}.${id}, ${row}.${quoted(c)});`).join(" ");
	const remove = columns.map((c) => `DELETE FROM ${quoted(ftsTable(table, c))} WHERE rowid = old.${id};`).join(" ");
	return [
		// Trigrams only (detail=none: no positions): the index narrows, LIKE on the table decides.
		...columns.map((c): SchemaObject => ({ name: ftsTable(table, c), type: "table", sql: `CREATE VIRTUAL TABLE ${quoted(ftsTable(table, c))} USING fts5(${quoted(c)}, tokenize='trigram', detail=none)` })),
		{ name: ftsTrigger(table, "insert"), type: "trigger", sql: `CREATE TRIGGER ${quoted(ftsTrigger(table, "insert"))} AFTER INSERT ON ${t} BEGIN ${insert("new")} END` },
		{ name: ftsTrigger(table, "delete"), type: "trigger", sql: `CREATE TRIGGER ${quoted(ftsTrigger(table, "delete"))} AFTER DELETE ON ${t} BEGIN ${remove} END` },
		// Only writes to the searched columns (or the key) touch the index: reachability updates do not.
		{
			name: ftsTrigger(table, "update"),
			type: "trigger",
			sql: `CREATE TRIGGER ${quoted(ftsTrigger(table, "update"))} AFTER UPDATE OF ${[id, ...columns.map(quoted)].join(", ")} ON ${t} BEGIN ${remove} ${insert("new")} END`,
		},
	];
}

const normalized = (sql: string | null | undefined) => (sql ?? "").replace(/\s+/g, " ").trim();

/** The FTS5 tables and triggers there are for a table (whatever an earlier release declared). */
async function ftsObjects(sequelize: Sequelize, table: string, transaction?: Transaction): Promise<SchemaObject[]> {
	const rows = await sequelize.query<SchemaObject & { tbl_name: string }>("SELECT name, type, tbl_name, sql FROM sqlite_master WHERE type IN ('table', 'trigger')", { type: QueryTypes.SELECT, transaction });
	return rows.filter((row) =>
		row.type === "trigger" ? row.tbl_name === table && row.name.startsWith(`${table}_fts__`) : row.name.startsWith(`${table}_fts_`) && /^CREATE VIRTUAL TABLE/i.test(row.sql ?? ""),
	);
}

function sameSchema(there: readonly SchemaObject[], wanted: readonly SchemaObject[]): boolean {
	return there.length === wanted.length && wanted.every((object) => there.some((row) => row.name === object.name && row.type === object.type && normalized(row.sql) === normalized(object.sql)));
}

/**
 * SQLite: makes the table's FTS5 indexes match what the model declares — made and filled from the
 * table's rows when missing (an older database) or declared otherwise, dropped when the model
 * declares none. One writer does it (BEGIN IMMEDIATE); a process that finds it done leaves it.
 */
export async function syncSubstringIndex(model: ModelStatic<Model>, columns: readonly string[]): Promise<void> {
	const sequelize = model.sequelize!;
	if (sequelize.getDialect() !== "sqlite") return;
	const table = String(model.getTableName());
	const key = model.primaryKeyAttribute ? (model.getAttributes()[model.primaryKeyAttribute]?.field ?? model.primaryKeyAttribute) : null;
	const wanted = columns.length > 0 && key ? ftsSchema(table, key, columns) : [];
	if (sameSchema(await ftsObjects(sequelize, table), wanted)) return;
	await sequelize.transaction({ type: Transaction.TYPES.IMMEDIATE }, async (transaction) => {
		const there = await ftsObjects(sequelize, table, transaction);
		if (sameSchema(there, wanted)) return;
		for (const object of there) await sequelize.query(`DROP ${object.type === "trigger" ? "TRIGGER" : "TABLE"} IF EXISTS ${quoted(object.name)}`, { transaction });
		for (const object of wanted.filter((o) => o.type === "table")) await sequelize.query(object.sql, { transaction });
		for (const column of columns) {
			await sequelize.query(`INSERT INTO ${quoted(ftsTable(table, column))}(rowid, ${quoted(column)}) SELECT ${quoted(key!)}, ${quoted(column)} FROM ${quoted(table)}`, { transaction });
		}
		for (const object of wanted.filter((o) => o.type === "trigger")) await sequelize.query(object.sql, { transaction });
	});
}

/**
 * How many rows a trigram may be in and still narrow a search: its candidates are each looked up
 * and rechecked, so beyond a sixth of the table the scan (which stops a page early) is cheaper;
 * and at most 4096, which bounds what counting them costs.
 */
const CANDIDATE_COST = 6;
const CANDIDATES_MAX = 4096;
/** Trigrams of a term counted (spread over it), and the rarest of them a candidate must hold. */
const TRIGRAMS_COUNTED = 12;
const TRIGRAMS_MATCHED = 3;

/** A term's trigrams (Unicode characters, as FTS5's trigram tokenizer makes them) from its literal runs. */
function trigramsOf(term: string): string[] {
	const trigrams = new Set<string>();
	for (const run of term.split(/[%_]/)) {
		const chars = Array.from(run);
		for (let at = 0; at + 3 <= chars.length; at++) trigrams.add(chars.slice(at, at + 3).join(""));
	}
	const all = [...trigrams];
	if (all.length <= TRIGRAMS_COUNTED) return all;
	return Array.from({ length: TRIGRAMS_COUNTED }, (_, i) => all[Math.round((i * (all.length - 1)) / (TRIGRAMS_COUNTED - 1))]!);
}

/** An FTS5 string; the trigram tokenizer reads it as its trigrams, case folded as the index is. */
const ftsString = (text: string) => `"${text.replaceAll('"', '""')}"`;

/**
 * The FTS5 query whose rows are candidates for LIKE '%term%' on `column`: rows holding the term's
 * rarest trigrams — a superset of LIKE's matches; LIKE then decides. Null where the index cannot
 * narrow the term enough to pay: a term without three literal characters in a row has no trigram,
 * and one whose every trigram is in many rows (`10.0.` in a 10.0/16 fleet) is cheaper scanned. The
 * trigrams are counted only up to that many rows each, so asking costs little either way.
 */
async function candidateQuery(sequelize: Sequelize, table: string, column: string, term: string): Promise<string | null> {
	const trigrams = trigramsOf(term);
	if (trigrams.length === 0) return null;
	const fts = quoted(ftsTable(table, column));
	const [{ rows }] = await sequelize.query<{ rows: number | null }>(`SELECT max(rowid) AS rows FROM ${quoted(table)}`, { type: QueryTypes.SELECT });
	const enough = Math.min(CANDIDATES_MAX, Math.floor((rows ?? 0) / CANDIDATE_COST));
	const counts = trigrams.map((_, i) => `(SELECT count(*) FROM (SELECT 1 FROM ${fts} WHERE ${fts} MATCH :m${i} LIMIT :limit)) AS c${i}`);
	const replacements: Record<string, string | number> = { limit: enough + 1 };
	trigrams.forEach((trigram, i) => (replacements[`m${i}`] = ftsString(trigram)));
	const [counted] = await sequelize.query<Record<string, number>>(`SELECT ${counts.join(", ")}`, { replacements, type: QueryTypes.SELECT });
	const narrowing = trigrams
		.map((trigram, i) => ({ trigram, rows: Number(counted![`c${i}`]) }))
		.filter((t) => t.rows <= enough)
		.sort((a, b) => a.rows - b.rows)
		.slice(0, TRIGRAMS_MATCHED);
	if (narrowing.length === 0) return null;
	return `SELECT rowid FROM ${fts} WHERE ${fts} MATCH ${sequelize.escape(narrowing.map((t) => ftsString(t.trigram)).join(" AND "))}`;
}

/** One plan per search: a list's page and its total ask at once. */
const planned = new Map<string, Promise<string | null>>();

function plannedCandidates(sequelize: Sequelize, table: string, column: string, term: string): Promise<string | null> {
	const key = JSON.stringify([table, column, term]);
	let plan = planned.get(key);
	if (!plan) {
		plan = candidateQuery(sequelize, table, column, term).finally(() => planned.delete(key));
		planned.set(key, plan);
	}
	return plan;
}

/**
 * The WHERE of a substring search of `term` in any of `fields`: LIKE, as moleculer-db's adapter
 * searches (case-insensitive for ASCII on SQLite, case-sensitive on PostgreSQL, where ILIKE would
 * cost a scan four times LIKE's). On SQLite, when every field has an FTS5 index that narrows the
 * term, the rows are first narrowed to the index's candidates, and LIKE decides.
 */
export async function substringSearch(model: ModelStatic<Model>, term: string, fields: readonly string[], indexed: readonly string[]): Promise<WhereOptions> {
	const sequelize = model.sequelize!;
	const pattern = `%${term}%`;
	const like = { [Op.or]: fields.map((field) => ({ [field]: { [Op.like]: pattern } })) };
	if (sequelize.getDialect() !== "sqlite") return like;
	const table = String(model.getTableName());
	const key = model.primaryKeyAttribute;
	// One field the index cannot narrow means a scan anyway: the others' indexes would only add to it.
	if (!key || fields.some((field) => !indexed.includes(field))) return like;
	const matches = await Promise.all(fields.map((field) => plannedCandidates(sequelize, table, field, term)));
	if (matches.some((match) => match === null)) return like;
	const candidates = literal(`(${matches.join(" UNION ")})`);
	return { [Op.and]: [{ [key]: { [Op.in]: candidates } }, like] };
}
