/**
 * `npm run bench:boot-storm`: a LAN of hosts powering on at once. 1000 concurrent clients fetch the
 * mainscript and the subscript, as booting hosts do, from the provisioner and — in the same run, on
 * the same machine, with the same number of processes — from nginx serving the same bytes as static
 * files. Targets: >= 0.5× nginx's throughput at <= 2× its p99 latency, with zero errors.
 *
 * Provisioner topology: a nats-server, one process with the registries and the boot timeline
 * (SQLite; every gateway records each request as a boot step, as it does in service), and GATEWAYS
 * gateway processes sharing the port (REUSE_PORT=true), as replicas of the gateway Deployment do.
 * Load: wrk (Debian), -c CONNECTIONS -d DURATION, a Lua script alternating the two paths.
 *
 * BOOT_STORM_PATHS (default "registries,boot") picks the storms:
 * - registries: the mainscript and the subscript, alternately (above);
 * - boot: GET /api/boot?mac=…&uuid=&serial=&manufacturer=&product=&arch=x86_64&platform=efi — the
 *   chain line every machine's embedded script sends — cycling through BOOT_MACS (10,000) known MACs
 *   of BOOT_MACHINES (100,000) machines in the inventory (imported in chunks of 2,000, ready, one
 *   profile chosen by one selector, a rendered script of ~345 bytes naming each machine). nginx
 *   serves each of those MACs its own static file with the same bytes (try_files on $arg_mac): the
 *   answers differ per machine, so a static server needs a file per machine too, and one file for
 *   all would spare nginx the per-request lookup the provisioner has to make. The machines,
 *   profiles and selectors run in the registries process.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateToken, tokenEntry, which } from "@clusterplatform/core";
import { stopChild } from "../test/support/children.ts";
import { freePort } from "../test/support/ports.ts";

const CONNECTIONS = Number(process.env.CONNECTIONS ?? 1000);
const DURATION = process.env.DURATION ?? "10s";
const GATEWAYS = Number(process.env.GATEWAYS ?? os.cpus().length);
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const PATHS = (process.env.BOOT_STORM_PATHS ?? "registries,boot").split(",").map((name) => name.trim());
const BOOT_MACHINES = Number(process.env.BOOT_MACHINES ?? 100_000);
const BOOT_MACS = Math.min(BOOT_MACHINES, Number(process.env.BOOT_MACS ?? 10_000));
/** Rows per import: a request crosses NATS, whose messages are at most 1 MB by default. */
const BOOT_WARMUP = process.env.BOOT_WARMUP ?? "60s";
const IMPORT_CHUNK = 2_000;
const CLI = path.resolve(import.meta.dirname, "..", "packages", "cli", "dist", "main.js");

const MAINSCRIPT = "#!ipxe\nmenu Choose Script\nitem mainsubscriptserver_fedora29 Main Sub Script Server Fedora 29\nchoose --default mainsubscriptserver_fedora29 --timeout 3000 server && goto ${server}\n:mainsubscriptserver_fedora29\nchain http://127.0.0.1/api/subscripts/1";
const SUBSCRIPT = "#!ipxe\nset base http://dl.fedoraproject.org/pub/fedora/linux/releases/29/Server/x86_64/os\nkernel ${base}/images/pxeboot/vmlinuz initrd=initrd.img inst.repo=${base} inst.ks=http://127.0.0.1/api/kickstarts/1\ninitrd ${base}/images/pxeboot/initrd.img\nboot";

/**
 * The programs the storm needs, found before anything starts (nginx lives in /usr/sbin, which a
 * non-root PATH often lacks). `bash scripts/setup` installs all three (Debian: nginx, wrk, nats-server).
 */
const PROGRAMS = { nginx: "the baseline static server", wrk: "the load generator", "nats-server": "the provisioner processes' transporter" } as const;
const SEARCH_PATH = [process.env.PATH ?? "", "/usr/local/sbin", "/usr/sbin", "/sbin"].join(path.delimiter);
const programs = Object.fromEntries(Object.keys(PROGRAMS).map((name) => [name, which(name, SEARCH_PATH)])) as Record<keyof typeof PROGRAMS, string | null>;
const missing = (Object.keys(PROGRAMS) as (keyof typeof PROGRAMS)[]).filter((name) => programs[name] === null);
if (missing.length > 0) {
	console.log(`boot storm not run: missing ${missing.map((name) => `${name} (${PROGRAMS[name]})`).join(", ")}; \`bash scripts/setup\` installs them (Debian packages nginx, wrk, nats-server)`);
	process.exit(0);
}

/** Machine n's MAC (02: a locally administered address, never a real NIC's). */
function macOf(n: number): string {
	return `02:00:${[n >> 24, n >> 16, n >> 8, n].map((byte) => (byte & 255).toString(16).padStart(2, "0")).join(":")}`;
}
const hostnameOf = (n: number) => `node-${n}.storm.example`;

const BOOT_TEMPLATE = "#!ipxe\n# {{name}} ({{mac}})\nset base {{mirror}}\nkernel ${base}/images/pxeboot/vmlinuz initrd=initrd.img inst.repo=${base} inst.ks={{kickstartUrl}} hostname={{hostname}}\ninitrd ${base}/images/pxeboot/initrd.img\nboot";
const MIRROR = "http://dl.fedoraproject.org/pub/fedora/linux/releases/29/Server/x86_64/os";

/** What the provisioner renders for machine n (checked against its answers before the storm). */
function bootScriptOf(n: number, baseUrl: string): string {
	const mac = macOf(n);
	return BOOT_TEMPLATE.replace("{{name}}", `storm-${n}`).replace("{{mac}}", mac).replace("{{mirror}}", MIRROR).replace("{{kickstartUrl}}", `${baseUrl}/api/boot/${mac}/kickstart`).replace("{{hostname}}", hostnameOf(n));
}

const bootQueryOf = (n: number) => `/api/boot?mac=${macOf(n)}&uuid=&serial=&manufacturer=&product=&arch=x86_64&platform=efi`;

/** The MACs the storm cycles through: BOOT_MACS of the inventory, spread over it. */
const stormMachines = Array.from({ length: BOOT_MACS }, (_, i) => Math.floor((i * BOOT_MACHINES) / BOOT_MACS));

const children: ChildProcess[] = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bench-storm-"));
// nginx workers run as an unprivileged user: they must be able to read the static copies.
fs.chmodSync(work, 0o755);


function start(command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
	const child = spawn(command, args, { env: { ...process.env, LOG_LEVEL: "warn", ...env }, stdio: ["ignore", "ignore", "inherit"] });
	children.push(child);
	return child;
}


async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	let lastError: unknown;
	while (!(await check().catch((err) => ((lastError = err), false)))) {
		if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms${lastError ? `: ${String((lastError as Error).cause ?? lastError)}` : ""}`);
		await new Promise((r) => setTimeout(r, 100));
	}
}

interface Load {
	requestsPerSecond: number;
	p50: number;
	p99: number;
	errors: number;
}

/** wrk's --latency report → numbers (latencies in ms). */
function parseWrk(output: string): Load {
	const toMs = (value: string) => {
		const match = /^([\d.]+)(us|ms|s|m)$/.exec(value);
		if (!match) throw new Error(`cannot read wrk's latency "${value}" in:\n${output}`);
		return Number(match[1]) * { us: 0.001, ms: 1, s: 1000, m: 60_000 }[match[2] as "us" | "ms" | "s" | "m"];
	};
	const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
	const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
	return {
		requestsPerSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(output)![1]),
		p50: toMs(/^\s+50%\s+(\S+)/m.exec(output)![1]!),
		p99: toMs(/^\s+99%\s+(\S+)/m.exec(output)![1]!),
		errors: (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0),
	};
}

/** wrk's Lua script for a storm: the registries' two paths alternately, or /api/boot cycling through the storm's MACs. */
function luaScript(kind: string): string {
	const script = path.join(work, `${kind}.lua`);
	if (kind === "registries") {
		fs.writeFileSync(script, 'local i = 0\nrequest = function()\n  i = i + 1\n  if i % 2 == 0 then return wrk.format("GET", "/api/subscripts/1") end\n  return wrk.format("GET", "/api/mainscripts/1")\nend\n');
	} else {
		// Each wrk thread starts at its own place in the list, so the threads do not ask in step.
		const paths = stormMachines.map((n) => `"${bootQueryOf(n)}"`).join(",\n");
		fs.writeFileSync(script, `local paths = {\n${paths}\n}\nlocal i = math.random(#paths)\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format("GET", paths[i])\nend\n`);
	}
	return script;
}

function storm(port: number, script: string, duration = DURATION): Load {
	const output = execFileSync(programs.wrk!, ["-t", "2", "-c", String(CONNECTIONS), "-d", duration, "--timeout", "5s", "--latency", "-s", script, `http://127.0.0.1:${port}/`], { encoding: "utf8" });
	return parseWrk(output);
}

async function startNginx(provisionerUrl: string): Promise<number> {
	const port = await freePort();
	for (const [name, text] of [["mainscripts", MAINSCRIPT], ["subscripts", SUBSCRIPT]] as const) {
		fs.mkdirSync(path.join(work, "www", "api", name), { recursive: true });
		fs.writeFileSync(path.join(work, "www", "api", name, "1"), text);
	}
	if (PATHS.includes("boot")) {
		fs.mkdirSync(path.join(work, "www", "boot"), { recursive: true });
		for (const n of stormMachines) fs.writeFileSync(path.join(work, "www", "boot", macOf(n)), bootScriptOf(n, provisionerUrl));
	}
	const conf = path.join(work, "nginx.conf");
	fs.writeFileSync(
		conf,
		`daemon off;\nworker_processes ${GATEWAYS};\npid ${work}/nginx.pid;\nerror_log ${work}/nginx-error.log;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  default_type "text/plain; charset=utf-8";\n  server { listen 127.0.0.1:${port} backlog=4096; root ${work}/www; location = /api/boot { try_files /boot/$arg_mac =404; } }\n}\n`,
	);
	start(programs.nginx!, ["-c", conf, "-p", work]);
	await until(async () => (await fetch(`http://127.0.0.1:${port}/api/mainscripts/1`)).ok, "nginx");
	return port;
}

async function startProvisioner(port: number): Promise<number> {
	const natsPort = await freePort();
	start(programs["nats-server"]!, ["-a", "127.0.0.1", "-p", String(natsPort)]);
	const token = generateToken();
	const env = { TRANSPORTER: `nats://127.0.0.1:${natsPort}`, API_TOKENS: tokenEntry("bench", token, false), PUBLIC_URL: `http://127.0.0.1:${port}` };
	const machineServices = PATHS.includes("boot") ? ["machines", "profiles", "selectors"] : [];
	start(process.execPath, [CLI, "start", "mainscripts", "subscripts", "boots", ...machineServices], { ...env, DATA_DIR: path.join(work, "registries"), NODE_ID: "bench-registries" });
	for (let i = 0; i < GATEWAYS; i++) {
		start(process.execPath, [CLI, "start", "gateway"], { ...env, PORT: String(port), HOST: "127.0.0.1", REUSE_PORT: "true", DATA_DIR: path.join(work, `gateway-${i}`), NODE_ID: `bench-gateway-${i}` });
	}
	const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
	// Every gateway process learns each registry's routes on its own: wait until all answer both.
	const served = async (name: string) => (await fetch(`http://127.0.0.1:${port}/api/${name}`, { headers })).ok;
	await until(async () => (await Promise.all(Array.from({ length: 4 * GATEWAYS }, (_, i) => served(i % 2 ? "mainscripts" : "subscripts")))).every(Boolean), "provisioner");
	for (const [name, text] of [["mainscripts", MAINSCRIPT], ["subscripts", SUBSCRIPT]]) {
		const res = await fetch(`http://127.0.0.1:${port}/api/${name}`, { method: "POST", headers, body: JSON.stringify({ text }) });
		if (res.status !== 201) throw new Error(`POST ${name}: ${res.status}`);
	}
	// Every gateway process answers the same bytes as nginx.
	for (let i = 0; i < 20; i++) if ((await (await fetch(`http://127.0.0.1:${port}/api/subscripts/1`)).text()) !== SUBSCRIPT) throw new Error("subscript differs");
	if (PATHS.includes("boot")) await seedMachines(port, headers);
	return port;
}

/** BOOT_MACHINES ready machines through the import route, one profile, one selector choosing it for them all. */
async function seedMachines(port: number, headers: Record<string, string>): Promise<void> {
	const api = (pathname: string, body: unknown) => fetch(`http://127.0.0.1:${port}/api${pathname}`, { method: "POST", headers, body: JSON.stringify(body) });
	const started = Date.now();
	// Every gateway process learns the machines' routes on its own: wait until all answer.
	const served = async () => (await fetch(`http://127.0.0.1:${port}/api/machines?pageSize=1`, { headers })).ok;
	await until(async () => (await Promise.all(Array.from({ length: 4 * GATEWAYS }, served))).every(Boolean), "machines service");
	const profile = await api("/profiles", { name: "storm", ipxeScript: BOOT_TEMPLATE, kickstart: "network --hostname={{hostname}}", variables: { mirror: MIRROR } });
	if (profile.status !== 201) throw new Error(`POST /profiles: ${profile.status} ${await profile.text()}`);
	const selector = await api("/selectors", { name: "storm", profileId: ((await profile.json()) as { id: number }).id, arch: "x86_64" });
	if (selector.status !== 201) throw new Error(`POST /selectors: ${selector.status} ${await selector.text()}`);
	for (let first = 0; first < BOOT_MACHINES; first += IMPORT_CHUNK) {
		const machines = Array.from({ length: Math.min(IMPORT_CHUNK, BOOT_MACHINES - first) }, (_, i) => {
			const n = first + i;
			return { name: `storm-${n}`, macs: [macOf(n)], hostname: hostnameOf(n), arch: "x86_64", firmware: "uefi", status: "ready", labels: { rack: `r${n % 100}` } };
		});
		const res = await api("/machines/import", { machines });
		if (res.status !== 201 && res.status !== 200) throw new Error(`import of machines ${first}…: ${res.status} ${(await res.text()).slice(0, 500)}`);
	}
	console.log(`seeded ${BOOT_MACHINES} machines in ${((Date.now() - started) / 1000).toFixed(1)} s`);
	// Every gateway process answers the same bytes as nginx's files.
	for (let i = 0; i < 20; i++) {
		const n = stormMachines[Math.floor(Math.random() * stormMachines.length)]!;
		const text = await (await fetch(`http://127.0.0.1:${port}${bootQueryOf(n)}`)).text();
		if (text !== bootScriptOf(n, `http://127.0.0.1:${port}`)) throw new Error(`boot script of machine ${n} differs from nginx's:\n${text}`);
	}
}

const row = (name: string, load: Load) =>
	`| ${name.padEnd(11)} | ${load.requestsPerSecond.toFixed(0).padStart(8)} | ${load.p50.toFixed(2).padStart(8)} | ${load.p99.toFixed(2).padStart(8)} | ${String(load.errors).padStart(6)} |`;

/** One storm against both servers, ROUNDS rounds; the best round of each against each other. */
function compare(kind: string, nginxPort: number, provisionerPort: number): boolean {
	const script = luaScript(kind);
	console.log(`\n${kind}: ${CONNECTIONS} connections, ${DURATION} per run, ${ROUNDS} rounds, ${GATEWAYS} processes each (${os.cpus().length} cores)${kind === "boot" ? `, ${BOOT_MACS} MACs of ${BOOT_MACHINES} machines` : ""}`);
	console.log("| server      | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|");
	// Warm both up (JIT, caches, 1000 connections accepted once) before anything is measured.
	storm(nginxPort, script, "3s");
	// The boot storm's answers are made once per MAC and gateway process (a database round each, the
	// cold path): fill them before measuring the repeated storm; the warm-up's rate is that cold path's.
	const warm = storm(provisionerPort, script, kind === "boot" ? BOOT_WARMUP : "3s");
	if (kind === "boot") console.log(`warm-up (${BOOT_WARMUP}, answers made as they are asked): ${warm.requestsPerSecond.toFixed(0)} requests/s, p99 ${warm.p99.toFixed(0)} ms, errors ${warm.errors}`);
	const best = { nginx: null as Load | null, provisioner: null as Load | null };
	for (let round = 0; round < ROUNDS; round++) {
		// Alternate, so neither side always runs on a warmer or a busier machine.
		const nginx = storm(nginxPort, script);
		const provisioner = storm(provisionerPort, script);
		console.log(row("nginx", nginx));
		console.log(row("provisioner", provisioner));
		if (!best.nginx || nginx.requestsPerSecond > best.nginx.requestsPerSecond) best.nginx = nginx;
		if (!best.provisioner || provisioner.requestsPerSecond > best.provisioner.requestsPerSecond) best.provisioner = provisioner;
	}
	const throughput = best.provisioner!.requestsPerSecond / best.nginx!.requestsPerSecond;
	const tail = best.provisioner!.p99 / best.nginx!.p99;
	const met = throughput >= 0.5 && tail <= 2 && best.provisioner!.errors === 0;
	console.log(`${kind}, best of ${ROUNDS}: throughput ${throughput.toFixed(2)}× nginx (target >= 0.5), p99 ${tail.toFixed(2)}× nginx (target <= 2), errors ${best.provisioner!.errors} (target 0): ${met ? "targets met" : "TARGETS MISSED"}`);
	return met;
}

try {
	const provisionerPort = await freePort();
	const nginxPort = await startNginx(`http://127.0.0.1:${provisionerPort}`);
	await startProvisioner(provisionerPort);
	for (const kind of PATHS) {
		if (kind !== "registries" && kind !== "boot") throw new Error(`BOOT_STORM_PATHS: "${kind}" is neither registries nor boot`);
		compare(kind, nginxPort, provisionerPort);
	}
} finally {
	// One at a time, newest first: the services have left the bus before the nats-server they talk through stops.
	for (const child of [...children].reverse()) await stopChild(child, "SIGTERM", 10_000);
	fs.rmSync(work, { recursive: true, force: true });
}
