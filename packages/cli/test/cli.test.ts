import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { eventually, freePort } from "../../../test/support/ports";
import { startServiceProcess } from "../../../test/support/processes";

describe("clusterplatform command", () => {
	const dirs: string[] = [];
	const dataDir = () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-cli-"));
		dirs.push(dir);
		return dir;
	};
	afterAll(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

	it("starts every service on embedded defaults, answers at /api, and stops cleanly on SIGTERM", async () => {
		const port = await freePort();
		const dir = dataDir();
		const cli = startServiceProcess(["start"], { PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dir });
		try {
			const health = await eventually(async () => {
				const res = await fetch(`http://127.0.0.1:${port}/api/health`);
				return res.ok ? res.json() : undefined;
			}, 30_000, "gateway health");
			expect(health).toMatchObject({ status: "ok" });
			const created = await fetch(`http://127.0.0.1:${port}/api/mainscripts`, {
				method: "POST",
				headers: { "Content-Type": "application/json" },
				body: JSON.stringify({ text: "#!ipxe\necho hi" }),
			});
			expect(created.status).toBe(201);
			expect(fs.existsSync(path.join(dir, "clusterplatform.sqlite"))).toBe(true);
			await eventually(() => cli.output().includes(`API at http://localhost:${port}/api`), 10_000, "the start banner");
		} finally {
			await cli.stop();
		}
		expect(await cli.exited).toBe(0);
	});

	it("says in one line which Debian package to install when a system binary is missing", async () => {
		const cli = startServiceProcess(["start", "sshkey"], { PATH: "/nonexistent", DATA_DIR: dataDir() });
		expect(await cli.exited).toBe(2);
		expect(cli.output().trim()).toBe("clusterplatform: ssh-keygen not found: install it with `apt-get install openssh-client`");
	});

	it.each([
		[["start"], { PORT: "http" }, "clusterplatform: PORT must be an integer from 0 to 65535, got \"http\""],
		[["start", "nonsense"], {}, "clusterplatform: unknown service nonsense;"],
		[["start"], { TRANSPORTER: "redis://x" }, "clusterplatform: TRANSPORTER must be a nats:// URL"],
	])("refuses %j with %j in one clear line", async (args, env, message) => {
		const cli = startServiceProcess(args, { DATA_DIR: dataDir(), ...env });
		expect(await cli.exited).toBe(2);
		expect(cli.output().trim().split("\n")[0]).toContain(message);
	});
});
