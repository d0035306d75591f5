import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const made = new Set<string>();

/**
 * A fresh temp dir (`<tmpdir>/<prefix>XXXXXX`) that is removed when the test file ends, however it
 * ends: one tracker instead of each file's own list and afterAll.
 */
export function scratchDir(prefix: string): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
	made.add(dir);
	return dir;
}

// Registered once per test file (jest gives each file its own module registry).
afterAll(() => {
	for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
	made.clear();
});
