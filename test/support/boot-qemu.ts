import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { freePort } from "./ports";

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd";

export interface QemuRun {
	pid: number;
	/** Everything the guest wrote to its serial port so far. */
	serial(): string;
	/** Ends exactly this QEMU (by its PID); resolves when it has exited. */
	stop(): Promise<void>;
}

/**
 * A QEMU guest under the software CPU (TCG), no display, serial port to a file in `dir`, user-mode
 * networking (10.0.2.2 is the host's loopback). Killed after `timeoutMs` whatever happens.
 */
export function startQemu(dir: string, args: string[], timeoutMs: number): QemuRun {
	const serialFile = path.join(dir, `serial-${Date.now()}-${Math.random().toString(36).slice(2)}.log`);
	fs.writeFileSync(serialFile, "");
	const child: ChildProcess = spawn(
		"qemu-system-x86_64",
		["-accel", "tcg", "-m", "256", "-display", "none", "-no-reboot", "-serial", `file:${serialFile}`, "-monitor", "none", ...args],
		{ stdio: ["ignore", "ignore", "pipe"] },
	);
	let stderr = "";
	child.stderr?.on("data", (chunk) => (stderr += chunk));
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
	const killer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
	return {
		pid: child.pid!,
		serial: () => fs.readFileSync(serialFile, "latin1") + (stderr ? `\n[qemu stderr] ${stderr}` : ""),
		async stop() {
			clearTimeout(killer);
			if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
			await exited;
		},
	};
}

export interface RequestRecorder {
	port: number;
	/** Paths requested so far, in order. */
	paths: string[];
	/** Resolves with the first request (from index `since` of paths on) whose path matches, or rejects after timeoutMs. */
	waitFor(pattern: RegExp, timeoutMs: number, since?: number): Promise<string>;
	stop(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 that records every path asked for and answers a tiny iPXE script. */
export async function startRequestRecorder(): Promise<RequestRecorder> {
	const port = await freePort();
	const paths: string[] = [];
	const waiters: { pattern: RegExp; resolve: (p: string) => void }[] = [];
	const server = http.createServer((req, res) => {
		const url = req.url ?? "/";
		paths.push(url);
		for (const waiter of waiters.filter((w) => w.pattern.test(url))) waiter.resolve(url);
		res.writeHead(200, { "Content-Type": "text/plain" });
		res.end("#!ipxe\necho reached the test recorder\nsleep 60\n");
	});
	await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
	return {
		port,
		paths,
		waitFor(pattern, timeoutMs, since = 0) {
			const seen = paths.slice(since).find((p) => pattern.test(p));
			if (seen) return Promise.resolve(seen);
			return new Promise((resolve, reject) => {
				const timer = setTimeout(() => reject(new Error(`no request matching ${pattern} within ${timeoutMs} ms (saw ${JSON.stringify(paths)})`)), timeoutMs);
				waiters.push({ pattern, resolve: (p) => (clearTimeout(timer), resolve(p)) });
			});
		},
		stop: () => new Promise<void>((resolve) => {
			server.closeAllConnections();
			server.close(() => resolve());
		}),
	};
}
