import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
/** The built `clusterplatform` command (`npm run build` precedes `npm test`). */
export const CLI = path.join(REPO_ROOT, "packages", "cli", "dist", "main.js");

/** What a process of ours gets from the test's environment: only PATH and HOME; the rest it is given. */
function baseEnv(): Record<string, string> {
	return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" };
}

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
		env: { ...baseEnv(), LOG_LEVEL: "warn", ...env },
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

export interface CliRun {
	code: number | null;
	stdout: string;
	stderr: string;
	/** When each piece of stdout arrived (ms since the start), to tell streamed output from buffered. */
	stdoutTimes: { at: number; text: string }[];
}

/** `cli`, expecting exit 0: anything else throws with the command and its stderr. */
export async function cliOk(args: string[], env: Record<string, string>): Promise<CliRun> {
	const run = await cli(args, env);
	if (run.code !== 0) throw new Error(`clusterplatform ${args.join(" ")} exited ${run.code}: ${run.stderr}`);
	return run;
}

/** The built `clusterplatform` command as its own process, configured only by its environment; killed after 2 minutes. */
export function cli(args: string[], env: Record<string, string>, input?: string): Promise<CliRun> {
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, [CLI, ...args], {
			env: { ...baseEnv(), ...env },
			stdio: ["pipe", "pipe", "pipe"],
		});
		let stdout = "";
		let stderr = "";
		const started = Date.now();
		const stdoutTimes: CliRun["stdoutTimes"] = [];
		child.stdout.on("data", (chunk) => {
			stdout += chunk;
			stdoutTimes.push({ at: Date.now() - started, text: String(chunk) });
		});
		child.stderr.on("data", (chunk) => (stderr += chunk));
		const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
		child.once("error", reject);
		child.once("close", (code) => {
			clearTimeout(timer);
			resolve({ code, stdout, stderr, stdoutTimes });
		});
		child.stdin.end(input ?? "");
	});
}
