import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, waitForPort } from "./ports";

/** A server process a test started; stop() ends exactly that process (by its PID) and its files. */
export interface TestServer {
	url: string;
	port: number;
	pid: number;
	stop(): Promise<void>;
}

function findBinary(name: string, dirs: string[]): string {
	for (const dir of dirs) {
		const candidate = path.join(dir, name);
		if (fs.existsSync(candidate)) return candidate;
	}
	throw new Error(`${name} not found (looked in ${dirs.join(", ")}); run \`bash scripts/setup\``);
}

/** End a child we started (by its PID), escalating to SIGKILL after `graceMs`. */
export function stopChild(child: ChildProcess | null | undefined, signal: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<void> {
	if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
	return new Promise((resolve) => {
		const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
		child.once("exit", () => {
			clearTimeout(timer);
			resolve();
		});
		child.kill(signal);
	});
}

function tempDir(prefix: string): string {
	return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A server process on a fixed port that a test can stop and start again (same port, same data). */
async function restartable(port: number, launch: () => ChildProcess, signal: NodeJS.Signals = "SIGTERM", graceMs = 5000) {
	let child = launch();
	await waitForPort(port);
	return {
		get pid() {
			return child.pid!;
		},
		async restart(downtimeMs = 1000) {
			await stopChild(child, signal, graceMs);
			await new Promise((r) => setTimeout(r, downtimeMs));
			child = launch();
			await waitForPort(port);
		},
		end: () => stopChild(child, signal, graceMs),
	};
}

export async function startRedis(): Promise<TestServer & { restart(downtimeMs?: number): Promise<void> }> {
	const port = await freePort();
	const dir = tempDir("cpp-redis-");
	// Append-only persistence, as the manifests run it: what Redis acknowledged survives a restart.
	const server = await restartable(port, () =>
		spawn(findBinary("redis-server", ["/usr/bin", "/usr/local/bin"]), ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--save", ""], { stdio: "ignore" }),
	);
	return {
		url: `redis://127.0.0.1:${port}`,
		port,
		get pid() {
			return server.pid;
		},
		restart: server.restart,
		async stop() {
			await server.end();
			fs.rmSync(dir, { recursive: true, force: true });
		},
	};
}

export async function startNats(): Promise<TestServer & { restart(downtimeMs?: number): Promise<void> }> {
	const port = await freePort();
	const server = await restartable(port, () => spawn(findBinary("nats-server", ["/usr/bin", "/usr/sbin", "/usr/local/bin"]), ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" }));
	return {
		url: `nats://127.0.0.1:${port}`,
		port,
		get pid() {
			return server.pid;
		},
		restart: server.restart,
		stop: server.end,
	};
}

function postgresBinDir(): string {
	const root = "/usr/lib/postgresql";
	const versions = fs.existsSync(root) ? fs.readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
	for (const version of versions) if (fs.existsSync(path.join(root, version, "bin", "postgres"))) return path.join(root, version, "bin");
	throw new Error("PostgreSQL not found under /usr/lib/postgresql; run `bash scripts/setup`");
}

/** PostgreSQL refuses to run as root: run it as the `postgres` system user when we are root. */
function postgresUser(): { uid?: number; gid?: number } {
	if (process.getuid?.() !== 0) return {};
	const uid = Number(spawnSync("id", ["-u", "postgres"]).stdout.toString().trim());
	const gid = Number(spawnSync("id", ["-g", "postgres"]).stdout.toString().trim());
	if (!Number.isInteger(uid) || uid <= 0) throw new Error("running as root needs the `postgres` user (Debian's postgresql package creates it)");
	return { uid, gid };
}

export interface PostgresServer extends TestServer {
	createDatabase(name: string): Promise<string>;
	/** Stop the server (fast shutdown, data kept) and start it again on the same port. */
	restart(downtimeMs?: number): Promise<void>;
}

/** A throwaway PostgreSQL cluster: initdb into a temp dir, trust auth, loopback port only. */
export async function startPostgres(): Promise<PostgresServer> {
	const bin = postgresBinDir();
	const user = postgresUser();
	const dir = tempDir("cpp-pg-");
	const data = path.join(dir, "data");
	if (user.uid !== undefined) fs.chownSync(dir, user.uid, user.gid!);
	const initdb = spawnSync(path.join(bin, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"], { ...user, encoding: "utf8" });
	if (initdb.status !== 0) throw new Error(`initdb failed: ${initdb.stderr}`);
	const port = await freePort();
	const server = await restartable(
		port,
		() =>
			spawn(
				path.join(bin, "postgres"),
				["-D", data, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${dir}`, "-c", "fsync=off", "-c", "max_connections=200"],
				{ ...user, stdio: "ignore" },
			),
		"SIGINT",
		10_000,
	);
	const base = `postgres://postgres@127.0.0.1:${port}`;
	const psql = path.join(bin, "psql");
	return {
		url: `${base}/postgres`,
		port,
		get pid() {
			return server.pid;
		},
		async createDatabase(name: string) {
			if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
			// Retry while the server is still finishing its start-up.
			for (let attempt = 0; ; attempt++) {
				const result = spawnSync(psql, ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", `CREATE DATABASE ${name}`], { encoding: "utf8" });
				if (result.status === 0) return `${base}/${name}`;
				if (attempt > 50) throw new Error(`CREATE DATABASE failed: ${result.stderr}`);
				await new Promise((r) => setTimeout(r, 100));
			}
		},
		restart: server.restart,
		async stop() {
			await server.end();
			fs.rmSync(dir, { recursive: true, force: true });
		},
	};
}
