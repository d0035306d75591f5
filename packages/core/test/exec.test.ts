import { spawnSync } from "node:child_process";
import { exec, ExecError, requireBinary, run, which } from "@clusterplatform/core";

describe("safe exec", () => {
	it("passes arguments as they are: shell syntax is never interpreted", async () => {
		const hostile = "$(touch /tmp/cpp-pwned); `id` && echo pwned | cat > /tmp/x";
		const result = await run("printf", ["%s", hostile]);
		expect(result.stdout).toBe(hostile);
	});

	it("captures output and the exit code without throwing from exec", async () => {
		const result = await exec("sh", ["-c", "echo out; echo err >&2; exit 3"]);
		expect(result).toMatchObject({ code: 3, stdout: "out\n", stderr: "err\n", timedOut: false });
	});

	it("throws ExecError with the output's tail from run", async () => {
		await expect(run("sh", ["-c", "echo broken >&2; exit 1"])).rejects.toThrow(/sh exited with code 1: broken/);
		await expect(run("sh", ["-c", "exit 1"])).rejects.toBeInstanceOf(ExecError);
	});

	it("kills a process that overruns its timeout", async () => {
		const started = Date.now();
		const result = await exec("sleep", ["30"], { timeout: 300 });
		expect(result.timedOut).toBe(true);
		expect(Date.now() - started).toBeLessThan(10_000);
	});

	it("reports a missing program as exit code 127", async () => {
		expect((await exec("/nonexistent/program", [])).code).toBe(127);
	});

	it("finds binaries on PATH and names the Debian package when one is missing", () => {
		expect(which("sh")).toMatch(/\/sh$/);
		expect(() => requireBinary("no-such-tool-xyz", "no-such-package")).toThrow("no-such-tool-xyz not found: install it with `apt-get install no-such-package`");
	});

	it("with processGroup, a timed-out program's children end with it, and the result does not wait for them", async () => {
		const started = Date.now();
		const result = await exec("sh", ["-c", "sleep 37 & sleep 37"], { timeout: 500, processGroup: true });
		expect(result.timedOut).toBe(true);
		expect(Date.now() - started).toBeLessThan(5000);
		const left = spawnSync("pgrep", ["-f", "^sleep 37$"]).stdout.toString().trim();
		expect(left).toBe("");
	});
});
