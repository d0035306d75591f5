import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * A private Docker engine for the image tests: Debian's dockerd with its own data root, exec root,
 * pid file and unix socket in a temp dir, no bridge and no iptables rules (the containers run with
 * --net=host). Started by the test, stopped by it: stop() ends dockerd (by its PID) and checks
 * that its containerd and shims went with it, then removes the temp dir.
 */
export interface Dockerd {
	dir: string;
	host: string;
	pid: number;
	/** The docker client with this engine (argument array; never a shell). */
	docker(args: string[], options?: { input?: Buffer | string; timeoutMs?: number; allowFailure?: boolean }): { status: number | null; stdout: string; stderr: string };
	/** A docker client process (streams), for `save | load` and long runs. */
	spawnDocker(args: string[], options?: SpawnOptions): ChildProcess;
	log(): string;
	stop(): Promise<void>;
}

export const DOCKERD_BINARIES = ["/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/sbin/runc"];

/** The docker client to use: Debian's (20.10) speaks BuildKit without buildx; a newer one needs buildx. */
export function dockerClient(): string | null {
	if (process.env.DOCKER) return process.env.DOCKER;
	if (fs.existsSync("/usr/bin/docker")) return "/usr/bin/docker";
	const found = spawnSync("docker", ["buildx", "version"], { stdio: "ignore" });
	return found.status === 0 ? "docker" : null;
}

/** Why a private dockerd cannot run here, or null. */
export function dockerdMissing(): string | null {
	if (process.getuid?.() !== 0) return "not running as root (dockerd needs it)";
	for (const binary of DOCKERD_BINARIES) if (!fs.existsSync(binary)) return `${binary} is missing (apt-get install docker.io)`;
	if (!dockerClient()) return "no docker client with BuildKit (apt-get install docker.io)";
	return null;
}

function descendants(root: number): number[] {
	const children = new Map<number, number[]>();
	for (const name of fs.readdirSync("/proc")) {
		if (!/^\d+$/.test(name)) continue;
		try {
			const stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
			const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
			children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
		} catch {
			// gone
		}
	}
	const out: number[] = [];
	const walk = (pid: number) => {
		for (const child of children.get(pid) ?? []) {
			out.push(child);
			walk(child);
		}
	};
	walk(root);
	return out;
}

/** PIDs whose command line names this engine's temp dir (its containerd, shims). */
function processesUsing(dir: string): number[] {
	const pids: number[] = [];
	for (const name of fs.readdirSync("/proc")) {
		if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
		try {
			if (fs.readFileSync(`/proc/${name}/cmdline`, "utf8").includes(dir)) pids.push(Number(name));
		} catch {
			// gone
		}
	}
	return pids;
}

function mountsUnder(dir: string): string[] {
	return fs
		.readFileSync("/proc/self/mounts", "utf8")
		.split("\n")
		.map((line) => line.split(" ")[1] ?? "")
		.map((mount) => mount.replace(/\\040/g, " "))
		.filter((mount) => mount.startsWith(dir));
}

/**
 * An engine someone else started (CPP_TEST_DOCKER_HOST, for iterating on the suite with a warm
 * build cache): used as it is, and left running by stop().
 */
export function attachDockerd(host: string): Dockerd {
	const client = dockerClient();
	if (!client) throw new Error("no docker client");
	const env = { ...process.env, DOCKER_HOST: host, DOCKER_BUILDKIT: "1" };
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-dockerd-attached-"));
	return {
		dir,
		host,
		pid: 0,
		docker(argv, opts = {}) {
			const result = spawnSync(client, argv, { env, input: opts.input, encoding: "utf8", timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 });
			const out = { status: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? String(result.error ?? "") };
			if (result.status !== 0 && !opts.allowFailure) throw new Error(`docker ${argv.join(" ").slice(0, 200)} exited ${result.status}: ${out.stderr.slice(-2000)}`);
			return out;
		},
		spawnDocker: (argv, opts = {}) => spawn(client, argv, { ...opts, env: { ...env, ...(opts.env ?? {}) } }),
		log: () => "",
		async stop() {
			fs.rmSync(dir, { recursive: true, force: true });
		},
	};
}

/**
 * Start dockerd; with `spawnIn`, inside a network namespace (e.g. the LAN's distributor host,
 * so that `docker run --net=host` puts the container on that host's network).
 */
export async function startDockerd(options: { name?: string; spawnIn?: (command: string, args: string[], options: SpawnOptions) => ChildProcess; timeoutMs?: number } = {}): Promise<Dockerd> {
	const client = dockerClient();
	if (!client) throw new Error("no docker client");
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cpp-dockerd-${options.name ?? "main"}-`));
	const socket = path.join(dir, "docker.sock");
	const host = `unix://${socket}`;
	const args = [
		"--bridge=none",
		"--iptables=false",
		"--ip6tables=false",
		`--data-root=${path.join(dir, "data")}`,
		`--exec-root=${path.join(dir, "exec")}`,
		`--pidfile=${path.join(dir, "dockerd.pid")}`,
		`--host=${host}`,
		"--userland-proxy=false",
		"--log-level=warn",
	];
	const spawnOptions: SpawnOptions = { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DOCKER_HOST: host } };
	const child = options.spawnIn ? options.spawnIn("dockerd", args, spawnOptions) : spawn("dockerd", args, spawnOptions);
	let log = "";
	child.stdout!.on("data", (c: Buffer) => (log = (log + c.toString()).slice(-20_000)));
	child.stderr!.on("data", (c: Buffer) => (log = (log + c.toString()).slice(-20_000)));
	const env = { ...process.env, DOCKER_HOST: host, DOCKER_BUILDKIT: "1" };
	const docker: Dockerd["docker"] = (argv, opts = {}) => {
		const result = spawnSync(client, argv, { env, input: opts.input, encoding: "utf8", timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 });
		const out = { status: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? String(result.error ?? "") };
		if (result.status !== 0 && !opts.allowFailure) throw new Error(`docker ${argv.join(" ").slice(0, 200)} exited ${result.status}: ${out.stderr.slice(-2000)}`);
		return out;
	};
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
	const deadline = Date.now() + (options.timeoutMs ?? 60_000);
	while (docker(["version", "--format", "{{.Server.Version}}"], { allowFailure: true, timeoutMs: 10_000 }).status !== 0) {
		if (child.exitCode !== null || Date.now() > deadline) {
			child.kill("SIGKILL");
			fs.rmSync(dir, { recursive: true, force: true });
			throw new Error(`dockerd did not start: ${log.slice(-3000)}`);
		}
		await new Promise((r) => setTimeout(r, 300));
	}
	return {
		dir,
		host,
		pid: child.pid!,
		docker,
		spawnDocker: (argv, opts = {}) => spawn(client, argv, { ...opts, env: { ...env, ...(opts.env ?? {}) } }),
		log: () => log,
		async stop() {
			// Containers first (their shims end with them), then the engine by its PID.
			const ids = docker(["ps", "-aq"], { allowFailure: true }).stdout.split("\n").filter(Boolean);
			if (ids.length) docker(["rm", "-f", ...ids], { allowFailure: true, timeoutMs: 60_000 });
			const tree = [child.pid!, ...descendants(child.pid!)];
			if (child.exitCode === null && child.signalCode === null) {
				child.kill("SIGTERM");
				const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
				await exited;
				clearTimeout(timer);
			}
			// Its containerd and shims, found by PID (its children) and by its temp dir.
			const deadline = Date.now() + 15_000;
			let left = [...new Set([...tree.slice(1), ...processesUsing(dir)])].filter((pid) => fs.existsSync(`/proc/${pid}`));
			while (left.length && Date.now() < deadline) {
				await new Promise((r) => setTimeout(r, 250));
				left = left.filter((pid) => fs.existsSync(`/proc/${pid}`));
			}
			for (const pid of left) {
				try {
					process.kill(pid, "SIGKILL");
				} catch {
					// gone
				}
			}
			for (const mount of mountsUnder(dir).reverse()) spawnSync("umount", ["-l", mount]);
			fs.rmSync(dir, { recursive: true, force: true });
			if (left.length) throw new Error(`dockerd left processes behind (killed): ${left.join(", ")}`);
		},
	};
}
