import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DataTypes, Sequelize } from "sequelize";
import { Client } from "ssh2";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import type { TunnelGrant } from "@clusterplatform/tunnels";
import { freePort } from "@clusterplatform/test-kit/ports";
import { DATABASES, TEST_ADMIN_TOKEN, freshPostgresDatabase, startTestProvisioner, type DatabaseKind, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";

const SITE = "site.passwords";
const READ_ONLY_TOKEN = generateToken();
const sha256 = (text: string) => crypto.createHash("sha256").update(text).digest("hex");

/** Logs into the tunnel-server: resolves true when the password is accepted, false when refused; bounded. */
function logsIn(port: number, username: string, password: string): Promise<boolean> {
	return new Promise((resolve, reject) => {
		const client = new Client();
		const timer = setTimeout(() => (client.end(), reject(new Error("ssh login timed out"))), 10_000);
		client.once("ready", () => (clearTimeout(timer), client.end(), resolve(true)));
		client.once("error", (err: Error & { level?: string }) => (clearTimeout(timer), client.end(), err.level === "client-authentication" ? resolve(false) : reject(err)));
		client.connect({ host: "127.0.0.1", port, username, password, readyTimeout: 10_000 });
	});
}

/** The tunnels table as the database holds it, read with SQL past the service. */
async function rawRows(provisioner: TestProvisioner): Promise<Record<string, unknown>[]> {
	const service = provisioner.broker.getLocalService("tunnels") as unknown as { adapter: { model: { sequelize: Sequelize } } };
	const [rows] = await service.adapter.model.sequelize.query("SELECT * FROM tunnels ORDER BY id");
	return rows as Record<string, unknown>[];
}

async function grantsOf(provisioner: TestProvisioner, artifactId = SITE): Promise<TunnelGrant[]> {
	return (await provisioner.broker.call("tunnels.siteTunnels", { artifactId })) as TunnelGrant[];
}

function tunnelEnv(sshPort: number, rangeStart: number): Record<string, string> {
	return {
		API_TOKENS: [tokenEntry("test-admin", TEST_ADMIN_TOKEN, false), tokenEntry("auditor", READ_ONLY_TOKEN, true)].join(","),
		TUNNEL_SSH_PORT: String(sshPort),
		TUNNEL_SSH_HOST: "127.0.0.1",
		TUNNEL_PUBLIC_HOST: "127.0.0.1",
		TUNNEL_PORT_RANGE: `${rangeStart}-${rangeStart + 9}`,
	};
}

describe.each(DATABASES)("tunnel passwords (%s)", (database) => {
	let provisioner: TestProvisioner;
	let sshPort: number;

	beforeAll(async () => {
		sshPort = await freePort();
		provisioner = await startTestProvisioner({ database, services: ["gateway", "tunnels", "tunnel-server"], env: tunnelEnv(sshPort, await freePort()) });
	}, 60_000);
	afterAll(() => provisioner?.stop());

	it("keeps no usable password in the database: only a nonce and a hash, and the client still logs in", async () => {
		const created = await provisioner.api("/tunnels", { method: "POST", json: { artifactId: SITE, target: "127.0.0.1:9" } });
		expect(created.status).toBe(201);
		const { id } = await created.json();
		const grant = (await grantsOf(provisioner)).find((g) => g.id === id)!;
		expect(grant.token).toMatch(/^[0-9a-f]{64}$/);

		const row = (await rawRows(provisioner)).find((r) => r.id === id)!;
		expect(Object.keys(row)).not.toContain("token");
		expect(JSON.stringify(row)).not.toContain(grant.token);
		expect(row.tokenHash).toBe(sha256(grant.token));
		expect(row.formerTokenHash).toBeNull();

		expect(await logsIn(sshPort, `tunnel-${id}`, grant.token)).toBe(true);
		expect(await logsIn(sshPort, `tunnel-${id}`, row.tokenHash as string)).toBe(false);
		expect(await logsIn(sshPort, `tunnel-${id}`, row.tokenNonce as string)).toBe(false);
		// The password is made again, not stored: every grant carries the same one.
		expect((await grantsOf(provisioner)).find((g) => g.id === id)!.token).toBe(grant.token);
	}, 30_000);

	it("never shows, sorts or searches by the password's columns (the LIKE oracle gets 422 naming the parameter)", async () => {
		const reader = { Authorization: `Bearer ${READ_ONLY_TOKEN}` };
		for (const column of ["token", "tokenHash", "tokenNonce", "formerTokenHash"]) {
			for (const [query, field] of [
				[`search=a&searchFields=${column}`, "searchFields"],
				[`search=a&searchFields=artifactId%20${column}`, "searchFields"],
				[`sort=${column}`, "sort"],
				[`sort=-${column}`, "sort"],
			]) {
				const res = await provisioner.api(`/tunnels?${query}`, { headers: reader });
				expect([query, res.status]).toEqual([query, 422]);
				const body = await res.json();
				expect(body.name).toBe("ValidationError");
				expect(body.data.map((d: { field: string }) => d.field)).toEqual([field]);
			}
		}
		const listed = await provisioner.api(`/tunnels?search=${SITE}&searchFields=artifactId&sort=-id`, { headers: reader });
		expect(listed.status).toBe(200);
		const { rows } = await listed.json();
		expect(rows.length).toBeGreaterThan(0);
		for (const row of rows) for (const column of ["token", "tokenHash", "tokenNonce", "formerTokenHash"]) expect(row).not.toHaveProperty(column);
	});
});

/**
 * A database an older release wrote: tunnels with their passwords in a clear `token` column. The
 * upgraded manager hashes them and drops the column; clients holding the old password still log in.
 */
describe.each(DATABASES)("tunnel passwords kept in the clear by an older release (%s)", (database: DatabaseKind) => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-legacy-tunnels-"));
	const clearPassword = crypto.randomBytes(24).toString("hex");
	let provisioner: TestProvisioner;
	let sshPort: number;
	let databaseUrl: string | null = null;

	/** The tunnels table as the release before hashing defined it, with one open tunnel. */
	async function writeOlderDatabase(): Promise<void> {
		const sequelize = databaseUrl ? new Sequelize(databaseUrl, { logging: false }) : new Sequelize({ dialect: "sqlite", storage: path.join(dataDir, "clusterplatform.sqlite"), logging: false });
		try {
			const tunnels = sequelize.define("tunnels", {
				artifactId: { type: DataTypes.STRING(253), allowNull: false },
				target: { type: DataTypes.STRING(300), allowNull: false },
				remotePort: { type: DataTypes.INTEGER, allowNull: false },
				public: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
				status: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "pending" },
				statusReason: { type: DataTypes.TEXT, allowNull: true },
				token: { type: DataTypes.STRING(64), allowNull: false },
			});
			await tunnels.sync();
			await tunnels.create({ artifactId: SITE, target: "127.0.0.1:9", remotePort: await freePort(), status: "pending", token: clearPassword });
		} finally {
			await sequelize.close();
		}
	}

	beforeAll(async () => {
		if (database === "postgres") databaseUrl = await freshPostgresDatabase();
		await writeOlderDatabase();
		sshPort = await freePort();
		provisioner = await startTestProvisioner({
			services: ["gateway", "tunnels", "tunnel-server"],
			env: { ...tunnelEnv(sshPort, await freePort()), DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) },
		});
	}, 60_000);
	afterAll(async () => {
		await provisioner?.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	it("drops the clear column at start, and both the old password and the new one log in", async () => {
		const [row] = await rawRows(provisioner);
		expect(Object.keys(row!)).not.toContain("token");
		expect(JSON.stringify(row)).not.toContain(clearPassword);
		expect(row!.formerTokenHash).toBe(sha256(clearPassword));

		const [grant] = await grantsOf(provisioner);
		expect(grant!.token).not.toBe(clearPassword);
		expect(row!.tokenHash).toBe(sha256(grant!.token));
		// A site's client running since before the upgrade has the old password; a new one is handed the new.
		expect(await logsIn(sshPort, `tunnel-${row!.id}`, clearPassword)).toBe(true);
		expect(await logsIn(sshPort, `tunnel-${row!.id}`, grant!.token)).toBe(true);
		expect(await logsIn(sshPort, `tunnel-${row!.id}`, "not-the-password")).toBe(false);

		// New tunnels work on the migrated table.
		const created = await provisioner.api("/tunnels", { method: "POST", json: { artifactId: SITE, target: "127.0.0.1:9" } });
		expect(created.status).toBe(201);
	}, 30_000);
});
