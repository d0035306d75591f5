import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, waitForPort } from "./ports";
import { stopChild } from "./children";

export { stopChild };

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

/** Redis on 127.0.0.1; with `password`, it requires it (--requirepass, as the manifests run it) and the URL carries it. */
export async function startRedis(options: { password?: string } = {}): Promise<TestServer & { restart(downtimeMs?: number): Promise<void> }> {
	const port = await freePort();
	const dir = tempDir("cpp-redis-");
	const auth = options.password === undefined ? [] : ["--requirepass", options.password];
	// Append-only persistence, as the manifests run it: what Redis acknowledged survives a restart.
	const server = await restartable(port, () =>
		spawn(findBinary("redis-server", ["/usr/bin", "/usr/local/bin"]), ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--save", "", ...auth], { stdio: "ignore" }),
	);
	return {
		url: options.password === undefined ? `redis://127.0.0.1:${port}` : `redis://:${encodeURIComponent(options.password)}@127.0.0.1:${port}`,
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

export interface SecureNats extends TestServer {
	/** The CA that signed the server's certificate (what NATS_TLS_CA names). */
	caFile: string;
	/** The environment a process of the cluster (site null) or of a site connects with. */
	env(site: string | null): Record<string, string>;
}

/**
 * nats-server as the manifests run it: TLS with a certificate from a CA the test makes (openssl),
 * and every user authenticated and confined — the cluster's and one per site, made with the built
 * CLI's `bus user`, exactly as an operator makes them.
 */
export async function startSecureNats(sites: string[]): Promise<SecureNats> {
	const dir = tempDir("cpp-nats-tls-");
	const file = (name: string) => path.join(dir, name);
	const openssl = (...args: string[]) => {
		const result = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
		if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr}`);
	};
	const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
	openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cpp-test-ca");
	openssl("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
	fs.writeFileSync(file("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
	openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext");
	const credentials = new Map<string | null, Record<string, string>>();
	for (const site of [null, ...sites]) {
		const cli = path.join(__dirname, "..", "..", "packages", "cli", "dist", "main.js");
		const made = spawnSync(process.execPath, [cli, "bus", "user", ...(site ? [`--site=${site}`] : []), `--file=${file("users.conf")}`], { encoding: "utf8" });
		if (made.status !== 0) throw new Error(`clusterplatform bus user failed: ${made.stderr}`);
		credentials.set(site, Object.fromEntries(made.stdout.split("\n").filter((l) => /^NATS_(USER|PASSWORD)=/.test(l)).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)])));
	}
	const port = await freePort();
	fs.writeFileSync(
		file("nats.conf"),
		`listen: "127.0.0.1:${port}"\ntls {\n  cert_file: "${file("server.pem")}"\n  key_file: "${file("server.key")}"\n  timeout: 5\n}\nauthorization {\n  timeout: 5\n  include "users.conf"\n}\n`,
	);
	const server = await restartable(port, () => spawn(findBinary("nats-server", ["/usr/bin", "/usr/sbin", "/usr/local/bin"]), ["-c", file("nats.conf")], { stdio: "ignore" }));
	const url = `tls://127.0.0.1:${port}`;
	return {
		url,
		port,
		caFile: file("ca.pem"),
		get pid() {
			return server.pid;
		},
		env: (site) => ({ TRANSPORTER: url, NATS_TLS_CA: file("ca.pem"), ...credentials.get(site)! }),
		async stop() {
			await server.end();
			fs.rmSync(dir, { recursive: true, force: true });
		},
	};
}
