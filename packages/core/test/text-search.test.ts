import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import { QueryTypes, Sequelize } from "sequelize";
import { DataTypes, createBroker, entityMixin, loadConfig, textParam } from "@clusterplatform/core";
import { DATABASES, freshPostgresDatabase, type DatabaseKind } from "@clusterplatform/test-kit/provisioner";

interface Row {
	id: number;
	ip: string;
	mac: string | null;
	note: string | null;
}

interface Page {
	rows: Row[];
	total: number;
}

/** A table of devices: ip and mac declared substring-searchable (trigram indexes), note not. */
function devicesService(name: string, searchable: string[] = ["ip", "mac"]) {
	return {
		name,
		mixins: [
			entityMixin({
				name,
				fields: {
					ip: { type: DataTypes.STRING(45), allowNull: false },
					mac: { type: DataTypes.STRING(17), allowNull: true },
					note: { type: DataTypes.STRING(200), allowNull: true },
				},
				params: { ip: textParam(45), mac: textParam(17, { optional: true }), note: textParam(200, { optional: true }) },
				modelOptions: {
					indexes: searchable.map((column) => ({ name: `${name}_${column}_search`, fields: [column], using: "gin", operator: "gin_trgm_ops" })),
				},
			}),
		],
	};
}

const mac = (n: number) => `52:54:00:${[(n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
const ipOf = (n: number) => (n % 3 === 0 ? `2001:db8::${n.toString(16)}` : `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`);

/**
 * Issue 17: the lists' substring search through the index a model declares — an FTS5 trigram table
 * kept by triggers on SQLite, pg_trgm on PostgreSQL — answers exactly what the plain LIKE answers,
 * after inserts, updates and deletes, for short terms and wildcards too.
 */
describe.each(DATABASES)("substring search through declared indexes on %s", (database: DatabaseKind) => {
	let dir: string;
	let broker: ServiceBroker;
	let databaseUrl: string | undefined;
	let sequelize: Sequelize;
	const statements: string[] = [];
	const call = <T = unknown>(action: string, params: object = {}) => broker.call<T, object>(`devices.${action}`, params, { meta: { $responseJSON: true } });
	const list = (search: string, searchFields: string, extra: object = {}) => call<Page>("list", { search, searchFields, sort: "-id", pageSize: 100, ...extra });

	/** What the plain LIKE (each database's own case rule) finds, straight from the table. */
	async function likeIds(term: string, fields: string[]): Promise<number[]> {
		const where = fields.map((f) => `"${f}" LIKE :pattern`).join(" OR ");
		const rows = await sequelize.query<{ id: number }>(`SELECT id FROM devices WHERE ${where} ORDER BY id DESC`, { replacements: { pattern: `%${term}%` }, type: QueryTypes.SELECT });
		return rows.map((r) => Number(r.id));
	}

	async function expectSameAsLike(term: string, fields: string[]): Promise<void> {
		const page = await list(term, fields.join(","));
		const expected = await likeIds(term, fields);
		// The first page (of 100, the most a page holds) and the total.
		expect({ term, fields, ids: page.rows.map((r) => r.id), total: page.total }).toEqual({ term, fields, ids: expected.slice(0, 100), total: expected.length });
	}

	beforeAll(async () => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-text-search-"));
		databaseUrl = database === "postgres" ? await freshPostgresDatabase() : undefined;
		broker = createBroker(loadConfig({ DATA_DIR: dir, LOG_LEVEL: "fatal", ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) }), { logger: false });
		broker.createService(devicesService("devices"));
		await broker.start();
		const adapter = (broker.getLocalService("devices") as unknown as { adapter: { model: { sequelize: Sequelize } } }).adapter;
		sequelize = adapter.model.sequelize;
		// Every statement the service runs, to see which searches went through the index.
		sequelize.options.logging = (sql: string) => void statements.push(sql);
		const rows = Array.from({ length: 600 }, (_, n) => ({ ip: ipOf(n), mac: n % 7 === 0 ? null : n % 2 ? mac(n).toUpperCase() : mac(n), note: `rack ${n % 10}` }));
		await (adapter.model as unknown as { bulkCreate(rows: object[]): Promise<unknown> }).bulkCreate(rows);
	}, 60_000);
	afterAll(async () => {
		await broker?.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	});

	it("finds what LIKE finds: whole and partial addresses, MACs in either case, short terms, wildcards, nothing", async () => {
		for (const term of ["10.0.1.44", "2001:db8::1f", "0.2.", "db8", "52:54:00:00:01", "52:54:00:00:01:0A", "00:01:0a", "0a", "1", ":", "0_1", "1%4", "no-such-thing", "%", "_", "10.0_1.", "52:54%0a"]) {
			await expectSameAsLike(term, ["ip"]);
			await expectSameAsLike(term, ["mac"]);
			await expectSameAsLike(term, ["ip", "mac"]);
		}
		// A column without a declared index is searched the same way, by a scan.
		await expectSameAsLike("rack 3", ["note"]);
		await expectSameAsLike("ACK 3", ["ip", "note"]);
	});

	it("keeps a search's other conditions and its paging", async () => {
		const all = await likeIds("52:54:00:00:0", ["mac"]);
		const page = await list("52:54:00:00:0", "mac", { page: 2, pageSize: 10 });
		expect(page.total).toBe(all.length);
		expect(page.rows.map((r) => r.id)).toEqual(all.slice(10, 20));
		const found = await call<Row[]>("find", { search: "10.0.1.", searchFields: ["ip"], query: { note: "rack 3" }, sort: "-id" });
		const expected = await sequelize.query<{ id: number }>("SELECT id FROM devices WHERE ip LIKE '%10.0.1.%' AND note = 'rack 3' ORDER BY id DESC", { type: QueryTypes.SELECT });
		expect(found.map((r) => r.id)).toEqual(expected.map((r) => Number(r.id)));
		expect(found.length).toBeGreaterThan(0);
	});

	it("stays in step with the table through updates and deletes", async () => {
		const target = (await list("10.0.2.17", "ip")).rows.find((r) => r.ip === "10.0.2.17")!;
		await call("update", { id: target.id, ip: "10.99.0.1", mac: "AA:BB:CC:DD:EE:FF" });
		await expectSameAsLike("10.0.2.17", ["ip"]);
		await expectSameAsLike("10.99.0.1", ["ip"]);
		await expectSameAsLike("aa:bb:cc", ["mac"]);
		expect((await list("10.99.0.1", "ip")).rows.map((r) => r.id)).toEqual([target.id]);
		// An update of another column leaves the searched ones as they were.
		await call("update", { id: target.id, note: "moved" });
		expect((await list("DD:EE:FF", "mac")).rows.map((r) => r.id)).toEqual([target.id]);
		await call("remove", { id: target.id });
		expect((await list("10.99.0.1", "ip")).total).toBe(0);
		await expectSameAsLike("aa:bb:cc", ["mac"]);
		const created = await call<Row>("create", { ip: "10.99.0.2", mac: "aa:bb:cc:00:00:01" });
		expect((await list("99.0.2", "ip")).rows.map((r) => r.id)).toEqual([created.id]);
		await expectSameAsLike("AA:BB:CC", ["mac"]);
	});

	if (database === "sqlite") {
		it("goes through the FTS5 trigram index for a narrow term, and scans for a short or broad one", async () => {
			const searched = async (term: string) => {
				statements.length = 0;
				await list(term, "ip");
				return statements.filter((sql) => /FROM `devices`/.test(sql)).every((sql) => sql.includes('"devices_fts_ip"'));
			};
			expect(await searched("10.0.1.44")).toBe(true);
			expect(await searched("no-such-thing")).toBe(true);
			// No three literal characters in a row: the index cannot narrow it.
			expect(await searched("1")).toBe(false);
			expect(await searched("1_4")).toBe(false);
			// In (nearly) every row: the scan stops a page early, the index would read them all.
			expect(await searched("10.")).toBe(false);
		});

		it("keeps its index by triggers that only searched columns' writes fire", async () => {
			const triggers = await sequelize.query<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'devices' ORDER BY name", { type: QueryTypes.SELECT });
			expect(triggers.map((t) => t.name)).toEqual(["devices_fts__delete", "devices_fts__insert", "devices_fts__update"]);
			const [{ rows }] = await sequelize.query<{ rows: number }>("SELECT count(*) AS rows FROM devices", { type: QueryTypes.SELECT });
			for (const column of ["ip", "mac"]) {
				const [{ indexed }] = await sequelize.query<{ indexed: number }>(`SELECT count(*) AS indexed FROM devices_fts_${column}`, { type: QueryTypes.SELECT });
				expect([column, indexed]).toEqual([column, rows]);
			}
		});
	}
});

describe("substring search on an SQLite database of an older release", () => {
	it("indexes the rows already there when the service starts, and again when the declared columns change", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-text-search-old-"));
		try {
			// The table as a release without the FTS5 index left it, with rows in it.
			const old = new Sequelize({ dialect: "sqlite", storage: path.join(dir, "clusterplatform.sqlite"), logging: false });
			await old.query("CREATE TABLE devices (id INTEGER PRIMARY KEY AUTOINCREMENT, ip VARCHAR(45) NOT NULL, mac VARCHAR(17), note VARCHAR(200), createdAt DATETIME NOT NULL, updatedAt DATETIME NOT NULL)");
			for (let n = 0; n < 50; n++) await old.query("INSERT INTO devices (ip, mac, createdAt, updatedAt) VALUES (?, ?, '2026-01-01 00:00:00', '2026-01-01 00:00:00')", { replacements: [ipOf(n), mac(n)] });
			await old.close();
			const start = async (service: ReturnType<typeof devicesService>) => {
				const broker = createBroker(loadConfig({ DATA_DIR: dir, LOG_LEVEL: "fatal" }), { logger: false });
				broker.createService(service);
				await broker.start();
				return broker;
			};
			let broker = await start(devicesService("devices"));
			try {
				const page = await broker.call<Page, object>("devices.list", { search: "10.0.0.4", searchFields: "ip", sort: "id", pageSize: 100 });
				expect(page.rows.map((r) => r.ip)).toEqual(["10.0.0.4", "10.0.0.40", "10.0.0.41", "10.0.0.43", "10.0.0.44", "10.0.0.46", "10.0.0.47", "10.0.0.49"]);
			} finally {
				await broker.stop();
			}
			// A release that declares only ip searchable: the index is made again, for ip alone.
			broker = await start(devicesService("devices", ["ip"]));
			try {
				const check = new Sequelize({ dialect: "sqlite", storage: path.join(dir, "clusterplatform.sqlite"), logging: false });
				const tables = await check.query<{ name: string }>("SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name", { type: QueryTypes.SELECT });
				await check.close();
				expect(tables.map((t) => t.name)).toEqual(["devices_fts_ip"]);
				expect((await broker.call<Page, object>("devices.list", { search: "00:00:2A", searchFields: "mac" })).total).toBe(1);
				expect((await broker.call<Page, object>("devices.list", { search: "10.0.0.4", searchFields: "ip" })).total).toBe(8);
			} finally {
				await broker.stop();
			}
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	}, 60_000);
});
