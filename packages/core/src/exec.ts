import { execa } from "execa";
import fs from "node:fs";
import path from "node:path";
import { MissingBinaryError } from "./errors";

export interface ExecOptions {
	cwd?: string;
	/** Milliseconds before the process is killed (SIGKILL after a short grace period). */
	timeout?: number;
	env?: Record<string, string>;
	input?: string | Buffer;
	/** Abort the process from outside, e.g. when a job is cancelled. */
	signal?: AbortSignal;
	/** Called with stdout and stderr as they arrive (e.g. to follow a long transfer's progress). */
	onOutput?: (chunk: string) => void;
	/**
	 * Run it in a process group of its own, ended with it: a cancelled or timed-out `make` takes
	 * its compilers along instead of leaving them running.
	 */
	processGroup?: boolean;
}

export interface ExecResult {
	code: number;
	stdout: string;
	stderr: string;
	timedOut: boolean;
}

export class ExecError extends Error {
	override name = "ExecError";
	constructor(
		readonly command: string,
		readonly args: readonly string[],
		readonly result: ExecResult,
	) {
		const tail = (result.stderr || result.stdout).trim().split("\n").slice(-5).join("\n");
		super(
			result.timedOut
				? `${path.basename(command)} timed out`
				: `${path.basename(command)} exited with code ${result.code}${tail ? `: ${tail}` : ""}`,
		);
	}
}

const DEFAULT_TIMEOUT = 10 * 60 * 1000;

/**
 * Run a program with an argument array (never a shell), capture its output, and bound its time.
 * Resolves with the result whatever the exit code; use `run` to throw on failure.
 */
export async function exec(command: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
	const subprocess = execa(command, args, {
		cwd: options.cwd,
		timeout: options.timeout ?? DEFAULT_TIMEOUT,
		env: options.env,
		extendEnv: true,
		input: options.input,
		cancelSignal: options.signal,
		forceKillAfterDelay: 2000,
		reject: false,
		shell: false,
		stripFinalNewline: false,
		maxBuffer: 64 * 1024 * 1024,
		detached: options.processGroup ?? false,
	});
	if (options.onOutput) {
		const forward = (chunk: Buffer) => options.onOutput!(chunk.toString("utf8"));
		subprocess.stdout?.on("data", forward);
		subprocess.stderr?.on("data", forward);
	}
	// When the leader exits (done, cancelled or timed out), what it left running goes with it: the
	// result waits for the output pipes, which its children would hold open until they finish.
	if (options.processGroup && subprocess.pid) subprocess.once("exit", () => endProcessGroup(subprocess.pid!));
	const result = await subprocess;
	if (result.failed && result.exitCode === undefined && !result.timedOut && (result as { code?: string }).code === "ENOENT") {
		return { code: 127, stdout: "", stderr: `${command}: not found`, timedOut: false };
	}
	return {
		code: result.exitCode ?? (result.timedOut ? 124 : 1),
		stdout: String(result.stdout ?? ""),
		stderr: String(result.stderr ?? ""),
		timedOut: Boolean(result.timedOut),
	};
}

/** Whatever of a finished leader's process group is still running (nothing, after a normal exit). */
function endProcessGroup(pid: number): void {
	try {
		process.kill(-pid, "SIGKILL");
	} catch {
		// the group is empty: nothing left over
	}
}

/** Like exec, but a non-zero exit or a timeout throws ExecError carrying the output. */
export async function run(command: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
	const result = await exec(command, args, options);
	if (result.code !== 0 || result.timedOut) throw new ExecError(command, args, result);
	return result;
}

/** Absolute path of a program on PATH, or null. */
export function which(binary: string, searchPath = process.env.PATH ?? ""): string | null {
	for (const dir of searchPath.split(path.delimiter)) {
		if (!dir) continue;
		const candidate = path.join(dir, binary);
		try {
			fs.accessSync(candidate, fs.constants.X_OK);
			if (fs.statSync(candidate).isFile()) return candidate;
		} catch {
			// not here
		}
	}
	return null;
}

/** Path of a required program; throws one clear line naming the Debian package to install. */
export function requireBinary(binary: string, debianPackage: string): string {
	const found = which(binary) ?? which(binary, "/usr/sbin:/sbin");
	if (!found) throw new MissingBinaryError(binary, debianPackage);
	return found;
}
