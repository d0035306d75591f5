import type { Model, ModelStatic, Sequelize, Transaction } from "sequelize";
import { ConflictError, DataTypes, Op, invalid } from "@clusterplatform/core";
import { LABEL_KEY, SAFE_TEXT, normalizeMac } from "./fields";

/*
 * The machines table with its side tables, machinemacs (a MAC belongs to one machine) and
 * machinelabels (key/value per machine): the queries and writes that keep the three together.
 */

/** Rows written per statement: far below SQLite's bound on variables per statement. */
const WRITE_CHUNK = 200;
/** Most MACs `siteMacs` answers for one site (a list a distributor's dnsmasq reads on every change). */
export const SITE_MACS_MAX = 100_000;

/** A machine as written: MACs in one space-separated string (the column's getter splits them on read). */
export interface StoredMachine {
	id?: number;
	name: string;
	macs: string;
	labels?: Record<string, string>;
	artifactId?: string | null;
	// Symbols too: Sequelize's creation type for an untyped model is keyed by both.
	[column: string | symbol]: unknown;
}

export interface ListFilter {
	mac?: string;
	label?: string;
	status?: string;
	artifactId?: string;
}

interface SideTables {
	macs: ModelStatic<Model>;
	labels: ModelStatic<Model>;
}

export class Inventory {
	private constructor(
		// Written in the stored form (macs as one string), which the entity's read type does not describe.
		private readonly model: ModelStatic<Model>,
		private readonly side: SideTables,
	) {}

	static async open(model: ModelStatic<Model>): Promise<Inventory> {
		return new Inventory(model, await defineSideTables(model.sequelize!));
	}

	/** Run `work` in one transaction; SQLite's is IMMEDIATE, so two writers queue instead of failing. */
	async transaction<T>(work: (t: Transaction) => Promise<T>): Promise<T> {
		try {
			return await this.model.sequelize!.transaction({ type: "IMMEDIATE" as Transaction.TYPES }, work);
		} catch (err) {
			if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
			// Lost a race to another writer: what it took is named as the pre-check would have.
			const fields = Object.keys((err as { fields?: Record<string, unknown> }).fields ?? {});
			throw new ConflictError(`another machine took the same ${fields.join(" and ") || "name or MAC"} meanwhile`, { fields });
		}
	}

	/** The list's where clause for mac, label, status and artifactId; 422 naming a label no machine can have. */
	listFilter(params: ListFilter): object | undefined {
		const and: object[] = [];
		if (params.status) and.push({ status: params.status });
		if (params.artifactId) and.push({ artifactId: params.artifactId });
		if (params.mac) {
			const mac = normalizeMac(params.mac)!;
			and.push({ id: { [Op.in]: this.subquery(`SELECT "machineId" FROM "machinemacs" WHERE "mac" = :first`, mac) } });
		}
		if (params.label) {
			const [key, ...rest] = params.label.split("=");
			if (!LABEL_KEY.test(key!)) invalid("label", "must be key or key=value, the key of letters, digits, '_' or '-'");
			const value = rest.length ? rest.join("=") : null;
			if (value !== null && !SAFE_TEXT.test(value)) invalid("label", "has a value no label can hold");
			and.push({ id: { [Op.in]: this.subquery(`SELECT "machineId" FROM "machinelabels" WHERE "key" = :first${value === null ? "" : ` AND "value" = :second`}`, key!, value) } });
		}
		return and.length ? { [Op.and]: and } : undefined;
	}

	async machineIdByMac(value: string): Promise<number | null> {
		const mac = normalizeMac(value);
		if (!mac) return null;
		const row = (await this.side.macs.findOne({ where: { mac }, raw: true })) as { machineId: number } | null;
		return row ? row.machineId : null;
	}

	/** The machines that have any of these (normalized) MACs, each once. */
	async machineIdsByMacs(macs: string[]): Promise<number[]> {
		if (macs.length === 0) return [];
		const rows = (await this.side.macs.findAll({ where: { mac: { [Op.in]: macs } }, attributes: ["machineId"], raw: true })) as unknown as { machineId: number }[];
		return [...new Set(rows.map((row) => row.machineId))];
	}

	/** The MACs of a site's adopted machines (discovered ones are not known until adopted), at most SITE_MACS_MAX. */
	async siteMacs(artifactId: string): Promise<string[]> {
		const rows = (await this.model.findAll({ attributes: ["macs"], where: { artifactId, status: { [Op.ne]: "discovered" } }, order: [["id", "ASC"]], limit: SITE_MACS_MAX, raw: true })) as unknown as { macs: string }[];
		return rows.flatMap((row) => row.macs.split(" ")).filter(Boolean).slice(0, SITE_MACS_MAX);
	}

	/** 409 naming the row, field and value a name or MAC is taken by (by another machine, or an earlier row). */
	async conflictsOf(machines: { id?: number; name: string; macs: string | string[] }[], labels: string | string[]): Promise<void> {
		const labelOf = (index: number) => (Array.isArray(labels) ? `${labels[index]}.` : "");
		const seen = new Map<string, number>();
		machines.forEach((machine, index) => {
			for (const mac of macList(machine.macs)) {
				const earlier = seen.get(mac);
				if (earlier !== undefined && earlier !== index) invalid(`${labelOf(index)}macs`, `${mac} is a MAC of an earlier row too (${labelOf(earlier).slice(0, -1)})`);
				seen.set(mac, index);
			}
		});
		for (let at = 0; at < machines.length; at += WRITE_CHUNK) {
			const chunk = machines.slice(at, at + WRITE_CHUNK);
			const macs = chunk.flatMap((m) => macList(m.macs));
			const taken = (await this.side.macs.findAll({ where: { mac: { [Op.in]: macs } }, raw: true })) as unknown as { mac: string; machineId: number }[];
			for (const { mac, machineId } of taken) {
				const index = machines.findIndex((m) => macList(m.macs).includes(mac));
				if (machines[index]!.id !== machineId) throw new ConflictError(`${labelOf(index)}macs: ${mac} is a MAC of machine ${machineId} already`, { field: `${labelOf(index)}macs`, mac, machineId });
			}
			const names = (await this.model.findAll({ where: { name: { [Op.in]: chunk.map((m) => m.name) } }, attributes: ["id", "name"], raw: true })) as unknown as { id: number; name: string }[];
			for (const { id, name } of names) {
				const index = machines.findIndex((m) => m.name === name);
				if (machines[index]!.id !== id) throw new ConflictError(`${labelOf(index)}name: machine ${id} is named "${name}" already`, { field: `${labelOf(index)}name`, machineId: id });
			}
		}
	}

	/** Write new machines with their MACs and labels in one transaction; their ids, in order. */
	async writeNew(machines: StoredMachine[], labels: string | string[]): Promise<number[]> {
		await this.conflictsOf(machines, labels);
		return this.transaction(async (transaction) => {
			const ids: number[] = [];
			for (let at = 0; at < machines.length; at += WRITE_CHUNK) {
				const chunk = machines.slice(at, at + WRITE_CHUNK);
				await this.model.bulkCreate(chunk, { transaction });
				// bulkCreate's ids are not reliable on SQLite: the names (unique) find them.
				const made = (await this.model.findAll({ where: { name: { [Op.in]: chunk.map((m) => m.name) } }, attributes: ["id", "name"], raw: true, transaction })) as unknown as { id: number; name: string }[];
				const idOf = new Map(made.map((m) => [m.name, m.id]));
				const chunkIds = chunk.map((m) => idOf.get(m.name)!);
				ids.push(...chunkIds);
				await this.side.macs.bulkCreate(chunk.flatMap((m, i) => macList(m.macs).map((mac) => ({ mac, machineId: chunkIds[i] }))), { transaction });
				await this.side.labels.bulkCreate(chunk.flatMap((m, i) => Object.entries(m.labels ?? {}).map(([key, value]) => ({ machineId: chunkIds[i], key, value }))), { transaction });
			}
			return ids;
		});
	}

	/** An update's changes (stored form), with the MACs and labels they replace. */
	async update(id: number, changes: Partial<StoredMachine>): Promise<void> {
		await this.transaction(async (transaction) => {
			await this.model.update(changes, { where: { id }, transaction });
			if (changes.macs !== undefined) {
				await this.side.macs.destroy({ where: { machineId: id }, transaction });
				await this.side.macs.bulkCreate(macList(changes.macs).map((mac) => ({ mac, machineId: id })), { transaction });
			}
			if (changes.labels !== undefined) {
				await this.side.labels.destroy({ where: { machineId: id }, transaction });
				await this.side.labels.bulkCreate(Object.entries(changes.labels).map(([key, value]) => ({ machineId: id, key, value })), { transaction });
			}
		});
	}

	async remove(id: number): Promise<void> {
		await this.transaction(async (transaction) => {
			await this.side.macs.destroy({ where: { machineId: id }, transaction });
			await this.side.labels.destroy({ where: { machineId: id }, transaction });
			await this.model.destroy({ where: { id }, transaction });
		});
	}

	/** A literal subquery with its values escaped by the database's own quoting. */
	private subquery(sql: string, first: string, second?: string | null) {
		const sequelize: Sequelize = this.model.sequelize!;
		const text = sql.replace(":first", sequelize.escape(first)).replace(":second", sequelize.escape(second ?? ""));
		return sequelize.literal(`(${text})`);
	}
}

/** machinemacs and machinelabels, beside the machines table. */
async function defineSideTables(sequelize: Sequelize): Promise<SideTables> {
	const machineId = { type: DataTypes.INTEGER, allowNull: false, references: { model: "machines", key: "id" }, onDelete: "CASCADE" };
	const macs =
		sequelize.models.machinemacs ??
		sequelize.define("machinemacs", { mac: { type: DataTypes.STRING(17), primaryKey: true }, machineId }, { tableName: "machinemacs", timestamps: false, indexes: [{ name: "machinemacs_machine", fields: ["machineId"] }] });
	const labels =
		sequelize.models.machinelabels ??
		sequelize.define(
			"machinelabels",
			{ machineId: { ...machineId, primaryKey: true }, key: { type: DataTypes.STRING(63), primaryKey: true }, value: { type: DataTypes.STRING(253), allowNull: false } },
			{ tableName: "machinelabels", timestamps: false, indexes: [{ name: "machinelabels_key_value", fields: ["key", "value", "machineId"] }] },
		);
	await macs.sync();
	await labels.sync();
	return { macs, labels };
}

function macList(macs: string | string[]): string[] {
	return Array.isArray(macs) ? macs : macs.split(" ").filter(Boolean);
}
