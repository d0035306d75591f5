import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
const CLI = path.join(REPO_ROOT, "packages", "cli", "dist", "main.js");

/** A `clusterplatform` process the test started; stop()/kill() end exactly that PID. */
export interface ServiceProcess {
	pid: number;
	output(): string;
	exited: Promise<number | null>;
	stop(): Promise<void>;
	kill(): Promise<void>;
}

/**
 * Run the built CLI (`npm run build` precedes `npm test`) as its own OS process, the way a
 * Kubernetes Deployment would: same binary, configuration only from the environment.
 */
export function startServiceProcess(args: string[], env: Record<string, string>): ServiceProcess {
	return startProcess(CLI, env, args);
}

/** Any Node script of ours as its own OS process (e.g. a fixture playing an attacker on the bus). */
export function startProcess(script: string, env: Record<string, string>, args: string[] = []): ServiceProcess {
	const child: ChildProcess = spawn(process.execPath, [script, ...args], {
		env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", LOG_LEVEL: "warn", ...env },
		stdio: ["ignore", "pipe", "pipe"],
	});
	let output = "";
	child.stdout?.on("data", (chunk) => (output += chunk));
	child.stderr?.on("data", (chunk) => (output += chunk));
	const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
	const end = async (signal: NodeJS.Signals) => {
		if (child.exitCode !== null || child.signalCode !== null) return;
		const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
		child.kill(signal);
		await exited;
		clearTimeout(timer);
	};
	return { pid: child.pid!, output: () => output, exited, stop: () => end("SIGTERM"), kill: () => end("SIGKILL") };
}
