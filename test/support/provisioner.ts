import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Client } from "pg";
import { generateToken, loadConfig, tokenEntry } from "@clusterplatform/core";
import { startProvisioner, type RunningProvisioner } from "@clusterplatform/cli";
import { freePort } from "./ports";

export type DatabaseKind = "sqlite" | "postgres";

/** The admin token every test provisioner accepts (unless the test sets API_TOKENS itself). */
export const TEST_ADMIN_TOKEN = generateToken();
export const ADMIN_HEADERS = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

/** Service suites run once per database: SQLite files and the run's real PostgreSQL. */
export const DATABASES: DatabaseKind[] = ["sqlite", "postgres"];

let databaseCounter = 0;

/** A fresh, empty PostgreSQL database in the run's cluster (see global-setup.ts). */
export async function freshPostgresDatabase(): Promise<string> {
	const admin = process.env.CPP_TEST_POSTGRES_URL;
	if (!admin) throw new Error("CPP_TEST_POSTGRES_URL is not set: run the tests through jest (global-setup starts PostgreSQL)");
	const name = `t_${process.pid}_${Date.now()}_${databaseCounter++}`;
	const client = new Client({ connectionString: admin });
	await client.connect();
	try {
		await client.query(`CREATE DATABASE ${name}`);
	} finally {
		await client.end();
	}
	return admin.replace(/\/[^/]*$/, `/${name}`);
}

export interface TestProvisioner extends RunningProvisioner {
	/** http://127.0.0.1:<port> */
	baseUrl: string;
	dataDir: string;
	/** fetch against the gateway: api("/mainscripts", {method: "POST", json: {...}}) */
	api(pathname: string, init?: RequestInit & { json?: unknown }): Promise<Response>;
}

export interface TestProvisionerOptions {
	database?: DatabaseKind;
	services?: string[];
	env?: Record<string, string>;
}

/** The provisioner in this process on a free loopback port with its own data dir. */
export async function startTestProvisioner(options: TestProvisionerOptions = {}): Promise<TestProvisioner> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-test-"));
	const port = await freePort();
	const env: Record<string, string> = {
		PORT: String(port),
		HOST: "127.0.0.1",
		PUBLIC_URL: `http://127.0.0.1:${port}`,
		DATA_DIR: dataDir,
		LOG_LEVEL: process.env.CPP_TEST_LOG_LEVEL ?? "warn",
		NODE_ID: `test-${process.pid}-${port}`,
		// Auth on, as an operator runs it: api() sends an admin token; booting hosts' requests
		// (plain fetch without a header) take the machine path.
		AUTH: "on",
		API_TOKENS: tokenEntry("test-admin", TEST_ADMIN_TOKEN, false),
		...options.env,
	};
	if (options.database === "postgres") env.DATABASE_URL = await freshPostgresDatabase();
	const running = await startProvisioner(loadConfig(env), options.services ?? []);
	const baseUrl = `http://127.0.0.1:${port}`;
	return {
		...running,
		baseUrl,
		dataDir,
		api(pathname, init = {}) {
			const { json, ...rest } = init;
			const headers = new Headers(rest.headers);
			if (json !== undefined) headers.set("Content-Type", "application/json");
			if (!headers.has("Authorization")) headers.set("Authorization", ADMIN_HEADERS.Authorization);
			return fetch(`${baseUrl}/api${pathname}`, { ...rest, headers, body: json !== undefined ? JSON.stringify(json) : rest.body });
		},
		async stop() {
			await running.stop();
			fs.rmSync(dataDir, { recursive: true, force: true });
		},
	};
}
