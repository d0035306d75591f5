import fs from "node:fs";
import path from "node:path";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import SequelizeAdapter, { type FilterOptions } from "moleculer-db-adapter-sequelize";
import { Op, Sequelize, type Model, type ModelAttributes, type ModelOptions, type ModelStatic, type WhereOptions } from "sequelize";
import { configOf } from "./context";
import { ConfigError } from "./errors";
import { indexesToMake, substringSearch, substringSearchColumns, syncSubstringIndex } from "./text-search";

export { DataTypes, Op } from "sequelize";

export interface ModelDefinition {
	name: string;
	define: ModelAttributes;
	options?: ModelOptions;
}

interface SharedDatabase {
	sequelize: Sequelize;
	users: number;
}

/**
 * One Sequelize instance per database per process: services share its pool (SQLite allows one
 * writer, so separate instances would fight over the file lock), and the last service to stop
 * closes it.
 */
const databases = new Map<string, SharedDatabase>();

function databaseKey(broker: ServiceBroker): { key: string; create: () => Sequelize } {
	const config = configOf(broker);
	const logging = false;
	if (config.databaseUrl) {
		const url = config.databaseUrl;
		return {
			key: url,
			create: () => new Sequelize(url, { logging, pool: { max: 10, min: 0, idle: 10_000 }, retry: { max: 5 } }),
		};
	}
	const storage = path.join(config.dataDir, "clusterplatform.sqlite");
	return {
		key: `sqlite:${storage}`,
		create: () => {
			fs.mkdirSync(config.dataDir, { recursive: true });
			const sequelize = new Sequelize({ dialect: "sqlite", storage, logging, retry: { max: 10 } });
			prepareSqliteConnections(sequelize);
			return sequelize;
		},
	};
}

/** What every SQLite connection runs first: WAL lets readers go on while a writer commits; busy_timeout waits instead of failing. */
const SQLITE_PRAGMAS = ["PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=5000", "PRAGMA foreign_keys=ON"];

interface SqliteConnection {
	run(sql: string, callback: (err: Error | null) => void): void;
}

/**
 * Sequelize's SQLite dialect opens its connections (one shared, one per transaction) without its
 * connect hooks, so the pragmas are run where it hands a connection out, once per connection;
 * callers asking while they run wait for them.
 */
function prepareSqliteConnections(sequelize: Sequelize): void {
	const manager = sequelize.connectionManager as unknown as { getConnection(options?: object): Promise<SqliteConnection> };
	const open = manager.getConnection.bind(manager);
	const prepared = new WeakMap<SqliteConnection, Promise<void>>();
	manager.getConnection = async (options?: object) => {
		const connection = await open(options);
		let pragmas = prepared.get(connection);
		if (!pragmas) {
			pragmas = (async () => {
				for (const pragma of SQLITE_PRAGMAS) await new Promise<void>((resolve, reject) => connection.run(pragma, (err) => (err ? reject(err) : resolve())));
			})();
			prepared.set(connection, pragmas);
		}
		await pragmas;
		return connection;
	};
}

function acquire(broker: ServiceBroker): Sequelize {
	const { key, create } = databaseKey(broker);
	let shared = databases.get(key);
	if (!shared) {
		shared = { sequelize: create(), users: 0 };
		databases.set(key, shared);
	}
	shared.users++;
	return shared.sequelize;
}

function release(sequelize: Sequelize): Promise<void> {
	for (const [key, shared] of databases) {
		if (shared.sequelize !== sequelize) continue;
		if (--shared.users > 0) return Promise.resolve();
		databases.delete(key);
		return sequelize.close();
	}
	return Promise.resolve();
}

/**
 * `sync()` creates a missing table but never changes an existing one: a column added in a newer
 * release (with a default, or nullable) is added here, so an upgraded provisioner opens an older
 * database. A new column that needs a value for existing rows cannot be guessed: it stops the
 * service naming the table and column.
 */
async function addMissingColumns(model: ModelStatic<Model>): Promise<void> {
	const queries = model.sequelize!.getQueryInterface();
	const table = model.getTableName();
	const existing = await queries.describeTable(table);
	for (const [name, attribute] of Object.entries(model.getAttributes())) {
		const column = attribute.field ?? name;
		if (column in existing) continue;
		if (attribute.allowNull === false && attribute.defaultValue === undefined) {
			throw new ConfigError(`table ${String(table)} lacks column ${column}, which has no default for existing rows: migrate it by hand`);
		}
		await queries.addColumn(table, column, attribute);
	}
}

/**
 * What a model declares, kept apart from `model.options`, which holds what this start makes of it
 * (a model definition may start again in one process, on another database).
 */
const declaredIndexes = new WeakMap<ModelDefinition, IndexDeclaration[]>();

type IndexDeclaration = NonNullable<ModelOptions["indexes"]>[number];

class SharedSequelizeAdapter extends SequelizeAdapter {
	declare db: Sequelize;
	declare opts: unknown[];
	declare model: ModelStatic<Model>;
	declare service: { schema: { model: ModelDefinition } };
	private broker!: ServiceBroker;
	/** Columns the model declares a substring-search index on (text-search.ts). */
	private searchIndexed: string[] = [];

	override init(broker: ServiceBroker, service: Parameters<SequelizeAdapter["init"]>[1]): void {
		super.init(broker, service);
		this.broker = broker;
	}

	override async connect(): Promise<void> {
		const sequelize = acquire(this.broker);
		this.opts = [sequelize, { noSync: false }];
		const definition = this.service.schema.model;
		const declared = declaredIndexes.get(definition) ?? [...(definition.options?.indexes ?? [])];
		declaredIndexes.set(definition, declared);
		this.searchIndexed = substringSearchColumns(declared);
		definition.options = { ...definition.options, indexes: await indexesToMake(sequelize, definition.name, declared, this.broker.logger) };
		await super.connect();
		await addMissingColumns(this.model);
		await syncSubstringIndex(this.model, this.searchIndexed);
	}

	override disconnect(): Promise<void> {
		return this.db ? release(this.db) : Promise.resolve();
	}

	// moleculer-db's list calls both, for the page and its total: each searches through the index.
	override async find(filters: FilterOptions): Promise<object[]> {
		return super.find(await this.withIndexedSearch(filters));
	}

	override async count(filters: FilterOptions = {}): Promise<number> {
		return super.count(await this.withIndexedSearch(filters));
	}

	/** The adapter's own LIKE search (search + searchFields) as a query that uses the declared indexes. */
	private async withIndexedSearch(filters: FilterOptions): Promise<FilterOptions> {
		const { search, searchFields, ...rest } = filters;
		const fields = typeof searchFields === "string" ? searchFields.split(" ") : (searchFields ?? []);
		if (typeof search !== "string" || search === "" || fields.length === 0) return filters;
		const matching: WhereOptions = await substringSearch(this.model, search, fields, this.searchIndexed);
		return { ...rest, query: rest.query ? { [Op.and]: [rest.query, matching] } : matching };
	}
}

/**
 * moleculer-db on Sequelize: SQLite under the data dir by default, PostgreSQL when DATABASE_URL is
 * set. Rows have an integer `id`, `createdAt` and `updatedAt`.
 */
export function dbMixin(model: ModelDefinition): Partial<ServiceSchema> {
	return {
		mixins: [DbService],
		adapter: new SharedSequelizeAdapter({}),
		model,
		settings: { idField: "id", pageSize: 20, maxPageSize: 100 },
		actions: {
			// Bulk and raw-query actions are not part of the contract.
			find: { visibility: "public" },
			count: { visibility: "public" },
			insert: false,
		},
	} as Partial<ServiceSchema>;
}
