import fs from "node:fs";
import path from "node:path";

/** Where the services look for programs (core's requireBinary: PATH, then the sbin dirs). */
const PROGRAM_DIRS = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/sbin"].filter(Boolean);

/** "<program> is not installed" for the first of `programs` missing here, or null. */
export function missingProgram(programs: readonly string[]): string | null {
	for (const program of programs) if (!PROGRAM_DIRS.some((dir) => fs.existsSync(path.join(dir, program)))) return `${program} is not installed`;
	return null;
}

/** "<file> is missing" for the first of `files` absent here, or null. */
export function missingFile(files: readonly string[]): string | null {
	for (const file of files) if (!fs.existsSync(file)) return `${file} is missing`;
	return null;
}

/**
 * A suite that needs something this machine may lack. With `reason` null it is an ordinary
 * describe. Otherwise, under CI=true, it is one failing test naming the reason — a green CI never
 * hides a suite that did not run — and locally a skip that prints the reason.
 */
export function describeIf(reason: string | null, name: string, suite: () => void): void {
	if (!reason) {
		describe(name, suite);
		return;
	}
	if (process.env.CI === "true") {
		test(`${name} — can run here`, () => {
			throw new Error(`cannot run: ${reason}`);
		});
		return;
	}
	console.warn(`${name} — skipped: ${reason}`);
	describe.skip(name, suite);
}

/** One test with a requirement of its own, failing (CI) or skipping (locally) with its reason as describeIf does. */
export function itIf(reason: string | null, name: string, test: () => Promise<void>, timeoutMs?: number): void {
	if (!reason) return void it(name, test, timeoutMs);
	if (process.env.CI === "true") {
		it(`${name} — can run here`, () => {
			throw new Error(`cannot run: ${reason}`);
		});
		return;
	}
	console.warn(`${name} — skipped: ${reason}`);
	it.skip(name, test);
}
