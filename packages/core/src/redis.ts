import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { requireBinary } from "./exec";
import { privateRedisSocket } from "./queue";

export interface PrivateRedis {
	socket: string;
	pid: number;
	stop(): Promise<void>;
}

function canConnect(socket: string): Promise<boolean> {
	return new Promise((resolve) => {
		const connection = net.createConnection({ path: socket });
		connection.once("connect", () => {
			connection.end();
			resolve(true);
		});
		connection.once("error", () => resolve(false));
	});
}

/** Whether a process exists (signal 0 checks without signalling; EPERM: it exists, another user's). */
export function processAlive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch (err) {
		return (err as NodeJS.ErrnoException).code === "EPERM";
	}
}

/** The parent of a process (Linux /proc), or null when it is gone. */
function parentOf(pid: number): number | null {
	try {
		return Number(fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[1]);
	} catch {
		return null;
	}
}

/**
 * A redis-server a provisioner of this data dir started and then lost without stopping it (it was
 * killed): orphaned (its parent is gone), a redis-server, recorded in our pid file. Ended, so the
 * data dir is usable again; a redis-server some live process still owns is never touched.
 */
async function endOrphan(pidFile: string): Promise<boolean> {
	const pid = Number(fs.existsSync(pidFile) ? fs.readFileSync(pidFile, "utf8").trim() : NaN);
	if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) return false;
	const parent = parentOf(pid);
	const command = fs.existsSync(`/proc/${pid}/cmdline`) ? fs.readFileSync(`/proc/${pid}/cmdline`, "utf8") : "";
	if (parent !== 1 || !command.includes("redis-server")) return false;
	process.kill(pid, "SIGTERM");
	for (let waited = 0; waited < 5000 && processAlive(pid); waited += 50) await new Promise((r) => setTimeout(r, 50));
	if (processAlive(pid)) process.kill(pid, "SIGKILL");
	return true;
}

/**
 * A redis-server of our own on a unix socket in the data dir (no TCP port), with append-only
 * persistence so queued jobs survive a restart. It runs in a process group of its own: Ctrl-C in a
 * terminal signals the whole foreground group, and redis must outlive the services that still use
 * it until stop() ends it, in order. Stopped by stop() or when we exit; one left behind by a killed
 * provisioner is ended by the next start on the same data dir.
 */
export async function startPrivateRedis(dataDir: string, timeoutMs = 10_000): Promise<PrivateRedis> {
	const binary = requireBinary("redis-server", "redis-server");
	const socket = privateRedisSocket(dataDir);
	const dir = path.dirname(socket);
	const pidFile = path.join(dir, "redis.pid");
	fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
	if ((await canConnect(socket)) && !(await endOrphan(pidFile))) throw new Error(`a redis-server already listens on ${socket}; is another provisioner using ${dataDir}?`);
	fs.rmSync(socket, { force: true });
	const child: ChildProcess = spawn(
		binary,
		["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--dir", dir, "--appendonly", "yes", "--save", "", "--daemonize", "no", "--loglevel", "warning"],
		{ stdio: ["ignore", "ignore", "pipe"], detached: true },
	);
	fs.writeFileSync(pidFile, `${child.pid}\n`);
	let stderr = "";
	// Only its last words matter (why it did not start): kept bounded.
	child.stderr?.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4096)));
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
	const deadline = Date.now() + timeoutMs;
	while (!(await canConnect(socket))) {
		if (child.exitCode !== null || Date.now() > deadline) {
			child.kill("SIGKILL");
			throw new Error(`redis-server did not start on ${socket}: ${stderr.trim() || "timed out"}`);
		}
		await new Promise((r) => setTimeout(r, 50));
	}
	const killOnExit = () => child.kill("SIGTERM");
	process.once("exit", killOnExit);
	return {
		socket,
		pid: child.pid!,
		async stop() {
			process.removeListener("exit", killOnExit);
			if (child.exitCode === null && child.signalCode === null) {
				child.kill("SIGTERM");
				const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
				await exited;
				clearTimeout(timer);
			}
			fs.rmSync(pidFile, { force: true });
		},
	};
}
