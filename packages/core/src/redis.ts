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

/**
 * A redis-server of our own on a unix socket in the data dir (no TCP port), with append-only
 * persistence so queued jobs survive a restart. Stopped again by stop() or when we exit.
 */
export async function startPrivateRedis(dataDir: string, timeoutMs = 10_000): Promise<PrivateRedis> {
	const binary = requireBinary("redis-server", "redis-server");
	const socket = privateRedisSocket(dataDir);
	const dir = path.dirname(socket);
	fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
	if (await canConnect(socket)) throw new Error(`a redis-server already listens on ${socket}; is another provisioner using ${dataDir}?`);
	fs.rmSync(socket, { force: true });
	const child: ChildProcess = spawn(
		binary,
		["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--dir", dir, "--appendonly", "yes", "--save", "", "--daemonize", "no", "--loglevel", "warning"],
		{ stdio: ["ignore", "ignore", "pipe"] },
	);
	let stderr = "";
	child.stderr?.on("data", (chunk) => (stderr += chunk));
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
			if (child.exitCode === null) {
				child.kill("SIGTERM");
				const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
				await exited;
				clearTimeout(timer);
			}
		},
	};
}
