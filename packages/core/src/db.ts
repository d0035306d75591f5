import fs from "node:fs";
import path from "node:path";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import SequelizeAdapter from "moleculer-db-adapter-sequelize";
import { Sequelize, type Model, type ModelAttributes, type ModelOptions, type ModelStatic } from "sequelize";
import { configOf } from "./context";
import { ConfigError } from "./errors";

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
			// WAL lets readers go on while a writer commits; busy_timeout waits instead of failing.
			sequelize.addHook("afterConnect", async (connection: unknown) => {
				const db = connection as { run: (sql: string, cb: (err: Error | null) => void) => void };
				for (const pragma of ["PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=5000", "PRAGMA foreign_keys=ON"]) {
					await new Promise<void>((resolve, reject) => db.run(pragma, (err) => (err ? reject(err) : resolve())));
				}
			});
			return sequelize;
		},
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

/** Whether pg_trgm is there (or was made) in a PostgreSQL database, asked once per process and database. */
const trigramReady = new WeakMap<Sequelize, Promise<boolean>>();

/**
 * Indexes a model declares `using: "gin"` with `operator: "gin_trgm_ops"` serve the lists' substring
 * search (LIKE '%…%') on PostgreSQL; they need the pg_trgm extension (contrib, trusted since
 * PostgreSQL 13: the database's owner may create it). Where it cannot be had they are left out with
 * a warning (a search then scans the table). SQLite has no such index: they are PostgreSQL's only.
 */
const declaredIndexes = new WeakMap<ModelDefinition, NonNullable<ModelOptions["indexes"]>>();
async function trigramIndexes(sequelize: Sequelize, model: ModelDefinition, logger: { warn(message: string): void }): Promise<void> {
	// What the model declares, whatever an earlier start in this process left out.
	const indexes = declaredIndexes.get(model) ?? model.options?.indexes ?? [];
	if (!indexes.some((index) => index.operator === "gin_trgm_ops")) return;
	declaredIndexes.set(model, indexes);
	model.options = { ...model.options, indexes };
	const without = () => {
		model.options = { ...model.options, indexes: indexes.filter((index) => index.operator !== "gin_trgm_ops") };
	};
	if (sequelize.getDialect() !== "postgres") return without();
	let ready = trigramReady.get(sequelize);
	if (!ready) {
		ready = sequelize.query("CREATE EXTENSION IF NOT EXISTS pg_trgm").then(
			() => true,
			// Two processes creating it at once: one wins, and it is there.
			() => sequelize.query("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").then(([rows]) => rows.length > 0, () => false),
		);
		trigramReady.set(sequelize, ready);
	}
	if (await ready) return;
	// Asked again next time (the database may have been unreachable); this start goes without them.
	trigramReady.delete(sequelize);
	logger.warn(`table ${model.name}: no pg_trgm extension in this database (CREATE EXTENSION pg_trgm needs contrib and the database owner): its searches scan the table`);
	without();
}

class SharedSequelizeAdapter extends SequelizeAdapter {
	declare db: Sequelize;
	declare opts: unknown[];
	declare model: ModelStatic<Model>;
	private broker!: ServiceBroker;

	override init(broker: ServiceBroker, service: Parameters<SequelizeAdapter["init"]>[1]): void {
		super.init(broker, service);
		this.broker = broker;
	}

	override async connect(): Promise<void> {
		const sequelize = acquire(this.broker);
		this.opts = [sequelize, { noSync: false }];
		await trigramIndexes(sequelize, (this as unknown as { service: { schema: { model: ModelDefinition } } }).service.schema.model, this.broker.logger);
		await super.connect();
		await addMissingColumns(this.model);
	}

	override disconnect(): Promise<void> {
		return this.db ? release(this.db) : Promise.resolve();
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
