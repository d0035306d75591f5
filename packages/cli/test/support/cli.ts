import { spawn } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "../../../../test/support/processes";

export const CLI = path.join(REPO_ROOT, "packages", "cli", "dist", "main.js");

export interface CliRun {
	code: number | null;
	stdout: string;
	stderr: string;
	/** When each piece of stdout arrived (ms since the start), to tell streamed output from buffered. */
	stdoutTimes: { at: number; text: string }[];
}

/** The built `clusterplatform` command as its own process, configured only by its environment; killed after 2 minutes. */
export function cli(args: string[], env: Record<string, string>, input?: string): Promise<CliRun> {
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, [CLI, ...args], {
			env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...env },
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
