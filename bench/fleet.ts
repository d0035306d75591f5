/**
 * `npm run bench:fleet`: a growing fleet registering itself. The all-in-one provisioner (`npm start`
 * on embedded defaults, own temp DATA_DIR, 127.0.0.1) takes the seed's post-boot call
 * (`POST /api/localnodes?ip=…&artifactId=…&pingable=true`, no token), 32 at a time, from one site,
 * for documentation addresses (2001:db8::/32: nothing is ever sent to them; registering never
 * waits for reachability). Measured at 0→1k, →10k, →100k rows: registrations/s (through the HTTP
 * API; the figure is last/first, target >= 0.8), the latency of a page, a search by ip and by site
 * and a get of localnodes, and the provisioner's resident memory (target < 250 MB through and
 * after). Then boots and scriptruns are filled to 100,000 rows directly in the database, and as many
 * machines as the largest size are imported through POST /api/machines/import (2000 a request), and
 * their page/search/get is timed too (target < 50 ms each). On SQLite, then on a PostgreSQL the bench
 * starts on 127.0.0.1.
 *
 * The registration rate limiter (REGISTRATION_BURST/REGISTRATION_RATE, per source address) is lifted
 * in the provisioner's environment, as an operator expecting a boot storm from one NAT'd site would:
 * otherwise one source gets 120 registrations and then 2 a second.
 *
 * Environment: FLEET_MAX (default 100000; e.g. 10000 for a quick try), FLEET_DATABASES
 * (default "sqlite,postgres"), FLEET_CONCURRENCY (32), FLEET_BULK_ABOVE (default 10000: for a size
 * above it, the rows up to the last FLEET_MEASURE (5000) are written directly in the database and the
 * rate at the top is measured over HTTP — 90,000 registrations over HTTP take SQLite ~20 minutes on
 * a busy 2-core machine; "none": every row through HTTP), FLEET_SAMPLES (30 per query).
 * Writes test-artifacts/bench/fleet.json.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Sequelize, QueryTypes } from "sequelize";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { stopChild } from "../test/support/children.ts";
import { freePort, waitForPort } from "../test/support/ports.ts";

const MAX = Number(process.env.FLEET_MAX ?? 100_000);
const DATABASES = (process.env.FLEET_DATABASES ?? "sqlite,postgres").split(",").map((d) => d.trim()).filter(Boolean) as ("sqlite" | "postgres")[];
const CONCURRENCY = Number(process.env.FLEET_CONCURRENCY ?? 32);
const BULK_ABOVE = (process.env.FLEET_BULK_ABOVE ?? "10000") === "none" ? null : Number(process.env.FLEET_BULK_ABOVE ?? 10_000);
const MEASURE = Number(process.env.FLEET_MEASURE ?? 5000);
const SAMPLES = Number(process.env.FLEET_SAMPLES ?? 30);
const SIZES = [...new Set([1000, 10_000, 100_000].filter((s) => s < MAX).concat(MAX))];
const SITE = "fleet.bench.example";
const RSS_TARGET_MB = 250;
const LATENCY_TARGET_MS = 50;
const RATIO_TARGET = 0.8;
const ROOT = path.resolve(import.meta.dirname, "..");
const CLI = path.join(ROOT, "packages", "cli", "dist", "main.js");
/** The node flags of package.json's start script, so the bench measures what `npm start` runs. */
const NPM_START_NODE_FLAGS: string[] = (JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")).scripts.start as string)
	.split(/\s+/)
	.filter((word) => word.startsWith("--"));
const OUT_DIR = path.join(ROOT, "test-artifacts", "bench");

const children: ChildProcess[] = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bench-fleet-"));
// PostgreSQL runs as the postgres user when the bench runs as root: it must reach its directory.
fs.chmodSync(work, 0o755);

/** The n-th node's address in 2001:db8::/32 (documentation; never contacted), as the API spells it. */
function addressOf(n: number): string {
	return new URL(`http://[2001:db8:f1ee::${(Math.floor(n / 65536) + 1).toString(16)}:${(n % 65536).toString(16)}]`).hostname.slice(1, -1);
}

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	while (!(await check().catch(() => false))) {
		if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms`);
		await new Promise((r) => setTimeout(r, 200));
	}
}


/** Resident memory of a process in MB (VmRSS). */
function rssMb(pid: number): number {
	const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
	return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) / 1024;
}

/** A throwaway PostgreSQL (Debian's) on 127.0.0.1, as test/support/servers.ts starts the tests' one. */
async function startPostgres(): Promise<{ url: string; child: ChildProcess }> {
	const root = "/usr/lib/postgresql";
	const version = fs.existsSync(root) ? fs.readdirSync(root).sort((a, b) => Number(b) - Number(a)).find((v) => fs.existsSync(path.join(root, v, "bin", "postgres"))) : undefined;
	if (!version) throw new Error("PostgreSQL not found under /usr/lib/postgresql (Debian's postgresql package; `bash scripts/setup` installs it)");
	const bin = path.join(root, version, "bin");
	const user: { uid?: number; gid?: number } = {};
	if (process.getuid?.() === 0) {
		user.uid = Number(spawnSync("id", ["-u", "postgres"]).stdout.toString().trim());
		user.gid = Number(spawnSync("id", ["-g", "postgres"]).stdout.toString().trim());
	}
	const dir = path.join(work, "pg");
	fs.mkdirSync(dir);
	if (user.uid !== undefined) fs.chownSync(dir, user.uid, user.gid!);
	const data = path.join(dir, "data");
	const initdb = spawnSync(path.join(bin, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8"], { ...user, encoding: "utf8" });
	if (initdb.status !== 0) throw new Error(`initdb failed: ${initdb.stderr}`);
	const port = await freePort();
	const child = spawn(path.join(bin, "postgres"), ["-D", data, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${dir}`], { ...user, stdio: "ignore" });
	children.push(child);
	await waitForPort(port, 30_000);
	const url = `postgres://postgres@127.0.0.1:${port}`;
	for (let attempt = 0; ; attempt++) {
		const made = spawnSync(path.join(bin, "psql"), ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", "CREATE DATABASE fleet"], { encoding: "utf8" });
		if (made.status === 0) break;
		if (attempt > 100) throw new Error(`CREATE DATABASE failed: ${made.stderr}`);
		await new Promise((r) => setTimeout(r, 100));
	}
	return { url: `${url}/fleet`, child };
}

interface Latency {
	p50: number;
	p95: number;
	max: number;
}

function summary(samples: number[]): Latency {
	const sorted = [...samples].sort((a, b) => a - b);
	const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
	return { p50: round(at(0.5)), p95: round(at(0.95)), max: round(sorted[sorted.length - 1]!) };
}

const round = (n: number, digits = 1) => Number(n.toFixed(digits));

interface SizeResult {
	rows: number;
	registered: number;
	seconds: number;
	perSecond: number;
	errors: number;
	bulkSeeded: number;
	rssMb: number;
	latency: Record<string, Latency>;
}

async function runDatabase(kind: "sqlite" | "postgres") {
	const dataDir = fs.mkdtempSync(path.join(work, `${kind}-`));
	const port = await freePort();
	const token = generateToken();
	const postgres = kind === "postgres" ? await startPostgres() : null;
	const env: Record<string, string> = {
		...(process.env as Record<string, string>),
		DATA_DIR: dataDir,
		PORT: String(port),
		HOST: "127.0.0.1",
		PUBLIC_URL: `http://127.0.0.1:${port}`,
		LOG_LEVEL: "warn",
		API_TOKENS: tokenEntry("bench", token, false),
		// Lifted, as an operator expecting a boot storm from one site would (one source otherwise gets 120, then 2/s).
		REGISTRATION_BURST: "1000000",
		REGISTRATION_RATE: "100000",
		// Not what this measures: compiling iPXE object trees at start would take the cores for minutes.
		IPXE_PREPARE_PLATFORMS: "",
		...(postgres ? { DATABASE_URL: postgres.url } : {}),
	};
	delete env.TRANSPORTER;
	delete env.REDIS_URL;
	delete env.S3_ENDPOINT;
	if (!postgres) delete env.DATABASE_URL;
	fs.mkdirSync(OUT_DIR, { recursive: true });
	const log = fs.openSync(path.join(OUT_DIR, `fleet-${kind}.log`), "w");
	// Started as `npm start` starts it (package.json), V8 flags included.
	const provisioner = spawn(process.execPath, [...NPM_START_NODE_FLAGS, CLI, "start"], { env, stdio: ["ignore", log, log] });
	fs.closeSync(log);
	children.push(provisioner);
	const base = `http://127.0.0.1:${port}/api`;
	const auth = { Authorization: `Bearer ${token}` };
	await until(async () => (await fetch(`${base}/health`)).ok, "provisioner health", 120_000);
	await until(async () => (await fetch(`${base}/localnodes?pageSize=1`, { headers: auth })).ok, "localnodes");
	let peakRss = rssMb(provisioner.pid!);
	const sampler = setInterval(() => {
		try {
			peakRss = Math.max(peakRss, rssMb(provisioner.pid!));
		} catch {
			// gone: reported by the calls failing
		}
	}, 250);
	const startRss = rssMb(provisioner.pid!);
	const storage = postgres ? null : path.join(dataDir, "clusterplatform.sqlite");
	const db = postgres ? new Sequelize(postgres.url, { logging: false }) : new Sequelize({ dialect: "sqlite", storage: storage!, logging: false, retry: { max: 20 } });
	if (!postgres) await db.query("PRAGMA busy_timeout=10000");
	const ids: number[] = [];
	let next = 0;

	/** Registrations n ∈ [from, to) through the API, CONCURRENCY at once, as booting nodes send them. */
	async function register(from: number, to: number): Promise<{ seconds: number; errors: number }> {
		let errors = 0;
		let n = from;
		const started = performance.now();
		await Promise.all(
			Array.from({ length: CONCURRENCY }, async () => {
				while (n < to) {
					const mine = n++;
					const res = await fetch(`${base}/localnodes?ip=${encodeURIComponent(addressOf(mine))}&artifactId=${SITE}&pingable=true`, { method: "POST" }).catch(() => null);
					if (res?.status === 201) ids.push(((await res.json()) as { id: number }).id);
					else {
						errors++;
						if (errors <= 3) console.error(`registration ${mine}: ${res ? `${res.status} ${await res.text()}` : "no answer"}`);
					}
				}
			}),
		);
		return { seconds: (performance.now() - started) / 1000, errors };
	}

	/** Rows n ∈ [from, to) written straight into the table (for the largest size when FLEET_BULK_ABOVE says so). */
	async function seedNodes(from: number, to: number): Promise<void> {
		const now = new Date();
		for (let at = from; at < to; at += 1000) {
			const rows = Array.from({ length: Math.min(1000, to - at) }, (_, i) => ({ ip: addressOf(at + i), artifactId: SITE, pingable: true, sshPort: 22, createdAt: now, updatedAt: now }));
			await db.getQueryInterface().bulkInsert("localnodes", rows);
		}
		const [{ max }] = await db.query<{ max: number }>("SELECT MAX(id) AS max FROM localnodes", { type: QueryTypes.SELECT });
		ids.push(max);
		await settle(db, "localnodes");
	}

	async function time(url: string): Promise<number> {
		const started = performance.now();
		const res = await fetch(`${base}${url}`, { headers: auth });
		await res.arrayBuffer();
		const ms = performance.now() - started;
		if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
		return ms;
	}

	async function latencies(queries: Record<string, () => string>): Promise<Record<string, Latency>> {
		const out: Record<string, Latency> = {};
		for (const [name, url] of Object.entries(queries)) {
			await time(url()); // warm
			const samples: number[] = [];
			for (let i = 0; i < SAMPLES; i++) samples.push(await time(url()));
			out[name] = summary(samples);
		}
		return out;
	}

	const pick = () => Math.floor(Math.random() * next);
	const pickId = () => ids[Math.floor(Math.random() * ids.length)]!;
	const nodeQueries = {
		"page (console: 200, -id)": () => "/localnodes?pageSize=200&sort=-id",
		"page 20": () => "/localnodes?page=1&pageSize=20",
		"search ip": () => `/localnodes?search=${encodeURIComponent(addressOf(pick()))}&searchFields=ip`,
		"search site": () => `/localnodes?search=${SITE}&searchFields=artifactId`,
		get: () => `/localnodes/${pickId()}`,
	};

	const sizes: SizeResult[] = [];
	try {
		for (const size of SIZES) {
			let bulkSeeded = 0;
			const measureFrom = BULK_ABOVE !== null && size > BULK_ABOVE ? Math.max(next, size - MEASURE) : next;
			if (measureFrom > next) {
				console.log(`  ${kind}: seeding rows ${next}..${measureFrom} directly in the database`);
				await seedNodes(next, measureFrom);
				bulkSeeded = measureFrom - next;
				next = measureFrom;
			}
			const from = next;
			const { seconds, errors } = await register(from, size);
			next = size;
			const perSecond = (size - from) / seconds;
			const latency = await latencies(nodeQueries);
			const result = { rows: size, registered: size - from, seconds: round(seconds), perSecond: round(perSecond), errors, bulkSeeded, rssMb: round(rssMb(provisioner.pid!)), latency };
			sizes.push(result);
			console.log(`  ${kind}: ${from} → ${size}: ${result.perSecond} registrations/s (${errors} errors), RSS ${result.rssMb} MB, ${Object.entries(latency).map(([q, l]) => `${q} ${l.p50}/${l.p95} ms`).join(", ")}`);
		}
		// Settled: what the process holds once the registration storm is over (the memory target's span).
		await new Promise((r) => setTimeout(r, 5000));
		const afterRss = rssMb(provisioner.pid!);
		const registrationPeakRss = peakRss;
		// The other lists at 100,000 rows: written directly (a boot is a dozen events; runs need nodes with SSH).
		const others = await fillOthers(db, 100_000);
		const otherLatency = await latencies({
			"boots page (200, -id)": () => "/boots?pageSize=200&sort=-id",
			"boots search ip": () => `/boots?search=${encodeURIComponent(addressOf(Math.floor(Math.random() * 100_000)))}&searchFields=ip`,
			"boots search mac": () => `/boots?search=${macOf(Math.floor(Math.random() * 100_000))}&searchFields=mac`,
			"boots get": () => `/boots/${others.boots[0] + Math.floor(Math.random() * (others.boots[1] - others.boots[0]))}`,
			"scriptruns page (200, -id)": () => "/scriptruns?pageSize=200&sort=-id",
			"scriptruns search ip": () => `/scriptruns?search=${encodeURIComponent(addressOf(Math.floor(Math.random() * 100_000)))}&searchFields=ip`,
			"scriptruns search site": () => `/scriptruns?search=${SITE}&searchFields=artifactId`,
			"scriptruns get": () => `/scriptruns/${others.scriptruns[0] + Math.floor(Math.random() * (others.scriptruns[1] - others.scriptruns[0]))}`,
		});
		// The machines inventory at the same size, imported through the API in chunks as an operator would.
		const machineIds = await importMachines(base, auth, MAX, db);
		const rack = () => `r${Math.floor(Math.random() * RACKS)}`;
		Object.assign(
			otherLatency,
			await latencies({
				"machines page (200, -id)": () => "/machines?pageSize=200&sort=-id",
				"machines by mac": () => `/machines?mac=${machineMacOf(Math.floor(Math.random() * MAX))}`,
				"machines search mac": () => `/machines?search=${machineMacOf(Math.floor(Math.random() * MAX)).slice(6)}&searchFields=macs`,
				"machines by label": () => `/machines?label=rack=${rack()}&pageSize=50`,
				"machines by site": () => `/machines?artifactId=${SITE}&pageSize=50`,
				"machines get": () => `/machines/${machineIds[0] + Math.floor(Math.random() * (machineIds[1] - machineIds[0]))}`,
			}),
		);
		// Reported, not a target: the peak including the 100,000-machine import (2000 rows a request).
		return { database: kind, startRssMb: round(startRss), peakRssMb: round(registrationPeakRss), afterRssMb: round(afterRss), inventoryPeakRssMb: round(peakRss), sizes, others: otherLatency };
	} finally {
		clearInterval(sampler);
		await db.close();
		await stopChild(provisioner, "SIGTERM", 20_000);
		if (postgres) await stopChild(postgres.child, "SIGINT", 20_000);
	}
}

/**
 * After rows written in seconds: PostgreSQL's autovacuum would have analysed and vacuumed the table
 * during the hours a real fleet takes to register; here it is done at once, so the figures are not
 * a half-analysed table's. (SQLite has nothing to catch up on.)
 */
async function settle(db: Sequelize, table: string): Promise<void> {
	if (db.getDialect() === "postgres") await db.query(`VACUUM ANALYZE ${table}`);
}

function macOf(n: number): string {
	return `52:54:${[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

/** boots and scriptruns filled to `rows` directly in the database; their id ranges. */
async function fillOthers(db: Sequelize, rows: number): Promise<{ boots: [number, number]; scriptruns: [number, number] }> {
	const queries = db.getQueryInterface();
	const now = new Date();
	for (let at = 0; at < rows; at += 1000) {
		const n = Math.min(1000, rows - at);
		await queries.bulkInsert("boots", Array.from({ length: n }, (_, i) => ({ at: now, kind: i % 2 ? "dhcp" : "script", ip: addressOf(at + i), mac: macOf(at + i), artifactId: SITE, detail: "GET /api/mainscripts/1 200", createdAt: now, updatedAt: now })));
		await queries.bulkInsert(
			"scriptruns",
			Array.from({ length: n }, (_, i) => ({ caller: "bench", localnodeId: at + i + 1, ip: addressOf(at + i), artifactId: SITE, scriptSha256: "0".repeat(64), scriptBytes: 10, status: "done", code: 0, createdAt: now, updatedAt: now, finishedAt: now })),
		);
	}
	await settle(db, "boots");
	await settle(db, "scriptruns");
	const range = async (table: string): Promise<[number, number]> => {
		const [r] = await db.query<{ lo: number; hi: number }>(`SELECT MIN(id) AS lo, MAX(id) AS hi FROM ${table}`, { type: QueryTypes.SELECT });
		return [Number(r!.lo), Number(r!.hi)];
	};
	return { boots: await range("boots"), scriptruns: await range("scriptruns") };
}

/** Machines' racks (labels): a label search answers ~MAX/RACKS machines. */
const RACKS = 500;
const IMPORT_CHUNK = 2000;

function machineMacOf(n: number): string {
	return `02:cb:${[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

/** `count` machines through POST /api/machines/import (all or nothing per chunk); their id range. */
async function importMachines(base: string, auth: Record<string, string>, count: number, db: Sequelize): Promise<[number, number]> {
	const started = performance.now();
	for (let at = 0; at < count; at += IMPORT_CHUNK) {
		const machines = Array.from({ length: Math.min(IMPORT_CHUNK, count - at) }, (_, i) => ({
			name: `bench-${at + i}`,
			macs: [machineMacOf(at + i)],
			arch: "x86_64",
			firmware: (at + i) % 2 ? "uefi" : "bios",
			artifactId: SITE,
			labels: { rack: `r${(at + i) % RACKS}` },
		}));
		const res = await fetch(`${base}/machines/import`, { method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body: JSON.stringify({ machines }) });
		if (!res.ok) throw new Error(`POST /machines/import (rows ${at}..): ${res.status} ${(await res.text()).slice(0, 300)}`);
	}
	console.log(`  ${count} machines imported in ${Math.round((performance.now() - started) / 1000)} s (${IMPORT_CHUNK} a request)`);
	await settle(db, "machines");
	await settle(db, "machinemacs");
	await settle(db, "machinelabels");
	const [r] = await db.query<{ lo: number; hi: number }>("SELECT MIN(id) AS lo, MAX(id) AS hi FROM machines", { type: QueryTypes.SELECT });
	return [Number(r!.lo), Number(r!.hi)];
}

const results: Awaited<ReturnType<typeof runDatabase>>[] = [];
try {
	console.log(`fleet bench: sizes ${SIZES.join(", ")}; ${CONCURRENCY} concurrent registrations from one site (2001:db8::/32); REGISTRATION_BURST/RATE lifted; ${os.cpus().length} cores, ${Math.round(os.totalmem() / 1073741824)} GB, load ${os.loadavg()[0]!.toFixed(1)}${process.env.NODE_OPTIONS ? `; NODE_OPTIONS=${process.env.NODE_OPTIONS} (the provisioner inherits it)` : ""}`);
	for (const kind of DATABASES) results.push(await runDatabase(kind));
} finally {
	for (const child of [...children].reverse()) await stopChild(child, "SIGTERM", 20_000);
	fs.rmSync(work, { recursive: true, force: true });
}

let met = true;
const lines: string[] = [];
for (const r of results) {
	const first = r.sizes[0]!;
	const last = r.sizes[r.sizes.length - 1]!;
	const ratio = last.perSecond / first.perSecond;
	const worst = Math.max(...r.sizes.flatMap((s) => Object.values(s.latency).map((l) => l.p95)), ...Object.values(r.others).map((l) => l.p95));
	const dbMet = ratio >= RATIO_TARGET && r.peakRssMb < RSS_TARGET_MB && r.afterRssMb < RSS_TARGET_MB && worst < LATENCY_TARGET_MS && r.sizes.every((s) => s.errors === 0);
	met &&= dbMet;
	(r as Record<string, unknown>).ratio = round(ratio, 2);
	lines.push(`\n${r.database}: registrations/s last/first ${ratio.toFixed(2)} (target >= ${RATIO_TARGET}); RSS start ${r.startRssMb} MB, peak ${r.peakRssMb} MB, after ${r.afterRssMb} MB (target < ${RSS_TARGET_MB}; ${r.inventoryPeakRssMb} MB at the peak of the machines import); slowest p95 ${worst} ms (target < ${LATENCY_TARGET_MS}): ${dbMet ? "targets met" : "TARGETS MISSED"}`);
	const queries = Object.keys(first.latency);
	lines.push(`| rows | registered over HTTP | registrations/s | errors | RSS MB | ${queries.map((q) => `${q} p50/p95 ms`).join(" | ")} |`);
	lines.push(`|---|---|---|---|---|${queries.map(() => "---").join("|")}|`);
	for (const s of r.sizes) lines.push(`| ${s.rows.toLocaleString("en")} | ${s.registered.toLocaleString("en")}${s.bulkSeeded ? ` (+${s.bulkSeeded.toLocaleString("en")} seeded)` : ""} | ${s.perSecond} | ${s.errors} | ${s.rssMb} | ${queries.map((q) => `${s.latency[q]!.p50} / ${s.latency[q]!.p95}`).join(" | ")} |`);
	lines.push(`\n| at 100,000 rows | p50 ms | p95 ms | max ms |`);
	lines.push("|---|---|---|---|");
	for (const [q, l] of Object.entries(r.others)) lines.push(`| ${q} | ${l.p50} | ${l.p95} | ${l.max} |`);
}
console.log(lines.join("\n"));
console.log(`\n${met ? "all targets met" : "TARGETS MISSED"}`);
fs.mkdirSync(OUT_DIR, { recursive: true });
const out = path.join(OUT_DIR, process.env.FLEET_OUT ?? "fleet.json");
fs.writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), machine: { cores: os.cpus().length, memoryMb: Math.round(os.totalmem() / 1048576), load: os.loadavg() }, nodeOptions: process.env.NODE_OPTIONS ?? null, concurrency: CONCURRENCY, bulkAbove: BULK_ABOVE, targets: { ratio: RATIO_TARGET, rssMb: RSS_TARGET_MB, latencyMs: LATENCY_TARGET_MS }, results, met }, null, 2)}\n`);
console.log(`written to ${path.relative(process.cwd(), out)}`);
