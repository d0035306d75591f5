import fs from "node:fs";
import path from "node:path";
import { eventually, freePort } from "@clusterplatform/test-kit/ports";
import { startServiceProcess } from "@clusterplatform/test-kit/processes";
import { scratchDir } from "@clusterplatform/test-kit/scratch";

describe("clusterplatform command", () => {
	const dataDir = () => scratchDir("cpp-cli-");

	it("starts every service on embedded defaults behind a first-start token, and stops cleanly on SIGTERM", async () => {
		const port = await freePort();
		const dir = dataDir();
		const base = `http://127.0.0.1:${port}/api`;
		const cli = startServiceProcess(["start"], { PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dir });
		try {
			const token = await eventually(() => /admin API token \(shown once[^)]*\): (cpp_\S+)/.exec(cli.output())?.[1], 30_000, "the first-start token");
			await eventually(() => cli.output().includes(`API at http://localhost:${port}/api`), 30_000, "the start banner");
			expect(await (await fetch(`${base}/health`)).json()).toMatchObject({ status: "ok" });
			const post = (headers: Record<string, string>) =>
				fetch(`${base}/mainscripts`, { method: "POST", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify({ text: "#!ipxe\necho hi" }) });
			expect((await post({})).status).toBe(401);
			expect((await post({ Authorization: "Bearer cpp_wrong" })).status).toBe(401);
			const created = await post({ Authorization: `Bearer ${token}` });
			expect(created.status).toBe(201);
			const { id } = await created.json();
			// Booting hosts send no header: their path stays open.
			expect(await (await fetch(`${base}/mainscripts/${id}`)).text()).toBe("#!ipxe\necho hi");
			expect(fs.existsSync(path.join(dir, "clusterplatform.sqlite"))).toBe(true);
			expect(fs.readFileSync(path.join(dir, "auth", "tokens"), "utf8")).not.toContain(token);
		} finally {
			await cli.stop();
		}
		expect(await cli.exited).toBe(0);
		// A second start finds the token and prints none.
		const again = startServiceProcess(["start", "gateway", "mainscripts"], { PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dir });
		await eventually(() => again.output().includes("API at"), 30_000, "the second start");
		await again.stop();
		expect(again.output()).not.toContain("token");
	});

	it("makes read-only and admin tokens with `token create`, and API_TOKENS entries with `token entry`", async () => {
		const dir = dataDir();
		const create = startServiceProcess(["token", "create", "--name=ci", "--read-only"], { DATA_DIR: dir });
		expect(await create.exited).toBe(0);
		const token = create.output().trim();
		expect(token).toMatch(/^cpp_[A-Za-z0-9_-]{43}$/);
		expect(fs.readFileSync(path.join(dir, "auth", "tokens"), "utf8")).toMatch(/^ci:[0-9a-f]{64}:read\n$/);
		const entry = startServiceProcess(["token", "entry", "--name=ops", token], { DATA_DIR: dir });
		expect(await entry.exited).toBe(0);
		expect(entry.output().trim()).toMatch(/^ops:[0-9a-f]{64}$/);
	});

	it("says in one line which Debian package to install when a system binary is missing", async () => {
		const cli = startServiceProcess(["start", "sshkey"], { PATH: "/nonexistent", DATA_DIR: dataDir() });
		expect(await cli.exited).toBe(2);
		expect(cli.output().trim()).toBe("clusterplatform: ssh-keygen not found: install it with `apt-get install openssh-client`");
	});

	it.each([
		[["start"], { PORT: "http" }, "clusterplatform: PORT must be an integer from 0 to 65535, got \"http\""],
		[["start", "nonsense"], {}, "clusterplatform: unknown service nonsense;"],
		[["start"], { TRANSPORTER: "redis://x" }, "clusterplatform: TRANSPORTER must be a nats:// or tls:// URL"],
	])("refuses %j with %j in one clear line", async (args, env, message) => {
		const cli = startServiceProcess(args, { DATA_DIR: dataDir(), ...env });
		expect(await cli.exited).toBe(2);
		expect(cli.output().trim().split("\n")[0]).toContain(message);
	});
});
