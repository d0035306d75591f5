import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Sequelize } from "sequelize";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";

const SITE = "felicitas.pojtinger.swabia.sol";

describe.each(DATABASES)("localnodes on %s", (database) => {
	let provisioner: TestProvisioner;
	const total = async () => (await (await provisioner.api("/localnodes")).json()).total as number;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: ["gateway", "localnodes"] });
	});
	afterAll(() => provisioner?.stop());

	it("registers a node the way the seed's post-boot script does (query string, empty POST)", async () => {
		const res = await fetch(`${provisioner.baseUrl}/api/localnodes?ip=192.168.178.152&artifactId=${SITE}&pingable=true`, { method: "POST" });
		expect(res.status).toBe(201);
		const row = await res.json();
		expect(row).toMatchObject({ id: expect.any(Number), ip: "192.168.178.152", artifactId: SITE, pingable: true });
		expect(await (await provisioner.api(`/localnodes/${row.id}`)).json()).toMatchObject({ ip: "192.168.178.152", artifactId: SITE });
	});

	it("updates the row when the same node registers again instead of duplicating it", async () => {
		const first = await (await provisioner.api("/localnodes", { method: "POST", json: { ip: "10.1.2.3", artifactId: SITE, pingable: true } })).json();
		const before = await total();
		const again = await provisioner.api("/localnodes?ip=10.1.2.3&artifactId=" + SITE + "&pingable=false", { method: "POST" });
		expect(again.status).toBe(200);
		expect(await again.json()).toMatchObject({ id: first.id, pingable: false });
		expect(await total()).toBe(before);
	});

	it("keeps the SSH port a node registers with (22 unless it says otherwise), and refuses a bad one", async () => {
		const plain = await (await fetch(`${provisioner.baseUrl}/api/localnodes?ip=10.7.0.1&artifactId=${SITE}`, { method: "POST" })).json();
		expect(plain.sshPort).toBe(22);
		const other = await fetch(`${provisioner.baseUrl}/api/localnodes?ip=10.7.0.2&artifactId=${SITE}&sshPort=2222`, { method: "POST" });
		expect(other.status).toBe(201);
		expect((await other.json()).sshPort).toBe(2222);
		const before = await total();
		for (const bad of ["0", "65536", "22;reboot", "-1"]) {
			const res = await fetch(`${provisioner.baseUrl}/api/localnodes?ip=10.7.0.3&artifactId=${SITE}&sshPort=${encodeURIComponent(bad)}`, { method: "POST" });
			expect(res.status).toBe(422);
			expect(JSON.stringify(await res.json())).toContain("sshPort");
		}
		expect(await total()).toBe(before);
	});

	it("keeps one row when the same node registers many times at once", async () => {
		const before = await total();
		const results = await Promise.all(
			Array.from({ length: 8 }, () => provisioner.api("/localnodes", { method: "POST", json: { ip: "10.9.9.9", artifactId: SITE, pingable: true } })),
		);
		for (const res of results) expect([200, 201]).toContain(res.status);
		const ids = new Set(await Promise.all(results.map(async (res) => (await res.json()).id)));
		expect(ids.size).toBe(1);
		expect(await total()).toBe(before + 1);
	});

	it("accepts IPv6 and the same IP at another site as another node", async () => {
		expect((await provisioner.api("/localnodes", { method: "POST", json: { ip: "fd00::5", artifactId: SITE } })).status).toBe(201);
		expect((await provisioner.api("/localnodes", { method: "POST", json: { ip: "10.1.2.3", artifactId: "other.site" } })).status).toBe(201);
	});

	it.each([
		["an invalid IPv4 address", "ip=10.0.0.500&artifactId=site", "ip"],
		["a host name instead of an IP", "ip=example.com&artifactId=site", "ip"],
		["a shell substitution", "ip=$(reboot)&artifactId=site", "ip"],
		["a missing site tag", "ip=10.0.0.1", "artifactId"],
		["a non-boolean pingable", "ip=10.0.0.1&artifactId=site&pingable=maybe", "pingable"],
	])("refuses %s with a 422 naming the field and writes nothing", async (_what, query, field) => {
		const before = await total();
		const res = await fetch(`${provisioner.baseUrl}/api/localnodes?${query.replace("$(reboot)", encodeURIComponent("$(reboot)"))}`, { method: "POST" });
		expect(res.status).toBe(422);
		expect((await res.json()).data.map((d: { field: string }) => d.field)).toContain(field);
		expect(await total()).toBe(before);
	});

	it("deletes a node and then answers 404", async () => {
		const { id } = await (await provisioner.api("/localnodes", { method: "POST", json: { ip: "10.7.7.7", artifactId: SITE } })).json();
		expect((await provisioner.api(`/localnodes/${id}`, { method: "DELETE" })).status).toBe(200);
		expect((await provisioner.api(`/localnodes/${id}`)).status).toBe(404);
	});
});

describe("localnodes on a database of an older release", () => {
	it("adds the columns the release added (sshPort, with its default), keeps the rows and indexes them for search", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-upgrade-"));
		try {
			// The table as it was before sshPort existed, with a node in it.
			const old = new Sequelize({ dialect: "sqlite", storage: path.join(dataDir, "clusterplatform.sqlite"), logging: false });
			await old.query(
				"CREATE TABLE localnodes (id INTEGER PRIMARY KEY AUTOINCREMENT, ip VARCHAR(45) NOT NULL, artifactId VARCHAR(253) NOT NULL, pingable TINYINT(1) NOT NULL DEFAULT 0, reachable TINYINT(1), reachableCheckedAt DATETIME, hostKey VARCHAR(128), createdAt DATETIME NOT NULL, updatedAt DATETIME NOT NULL, UNIQUE (ip, artifactId))",
			);
			await old.query("INSERT INTO localnodes (ip, artifactId, pingable, createdAt, updatedAt) VALUES ('10.8.0.1', 'old.site', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')");
			await old.close();
			const provisioner = await startTestProvisioner({ services: ["gateway", "localnodes"], env: { DATA_DIR: dataDir } });
			try {
				const { rows } = await (await provisioner.api("/localnodes")).json();
				expect(rows).toEqual([expect.objectContaining({ ip: "10.8.0.1", artifactId: "old.site", pingable: true, sshPort: 22 })]);
				// Its substring-search index (FTS5) is made and filled at start: the old row is found through it.
				const found = await (await provisioner.api("/localnodes?search=10.8.0&searchFields=ip")).json();
				expect(found.rows.map((r: { ip: string }) => r.ip)).toEqual(["10.8.0.1"]);
				const index = new Sequelize({ dialect: "sqlite", storage: path.join(dataDir, "clusterplatform.sqlite"), logging: false });
				try {
					expect((await index.query("SELECT rowid, ip FROM localnodes_fts_ip"))[0]).toEqual([{ rowid: rows[0].id, ip: "10.8.0.1" }]);
				} finally {
					await index.close();
				}
			} finally {
				await provisioner.stop();
			}
		} finally {
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});
