import type { ChildProcess } from "node:child_process";

/**
 * End a child we started (by its PID), escalating to SIGKILL after `graceMs`; resolves once it has
 * exited. No imports of the kit's own: the benches load this file with Node's type stripping.
 */
export function stopChild(child: ChildProcess | null | undefined, signal: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<void> {
	if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
	return new Promise((resolve) => {
		const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
		child.once("exit", () => {
			clearTimeout(timer);
			resolve();
		});
		child.kill(signal);
	});
}
