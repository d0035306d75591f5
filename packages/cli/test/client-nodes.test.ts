import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, storeFor } from "@clusterplatform/core";
import { startProvisioner, type RunningProvisioner } from "@clusterplatform/cli";
import { eventually, freePort, waitForPort } from "@clusterplatform/test-kit/ports";
import { startTestProvisioner, TEST_ADMIN_TOKEN, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { startNats, type TestServer } from "@clusterplatform/test-kit/servers";
import { cli } from "@clusterplatform/test-kit/processes";

const SITE = "cli.test.site";
const REQUIRED = ["dropbear", "dropbearkey", "unshare"];

/**
 * A real SSH node without a VM: dropbear on a loopback address of its own, on a free port it registers
 * with (sshPort), in a private mount namespace whose /root is a temp dir holding the
 * test's authorized key — the machine's own /root/.ssh is never touched.
 */
function startSshNode(dir: string, address: string, port: number, publicKey: string): ChildProcess {
	const home = path.join(dir, "root");
	fs.mkdirSync(path.join(home, ".ssh"), { recursive: true, mode: 0o700 });
	fs.chmodSync(home, 0o700);
	fs.writeFileSync(path.join(home, ".ssh", "authorized_keys"), publicKey, { mode: 0o600 });
	const hostKey = path.join(dir, "host_key");
	execFileSync("dropbearkey", ["-t", "ed25519", "-f", hostKey], { stdio: "ignore" });
	// unshare and sh exec into dropbear (-F: foreground), so the child's PID is dropbear's.
	return spawn(
		"unshare",
		["--mount", "--propagation", "private", "--", "sh", "-c", 'mount --bind "$1" /root && exec dropbear -F -E -s -m -r "$2" -p "$3" -P "$4"', "sh", home, hostKey, `${address}:${port}`, path.join(dir, "dropbear.pid")],
		{ stdio: "ignore" },
	);
}

const missing = REQUIRED.filter((bin) => {
	try {
		execFileSync("which", [bin], { stdio: "ignore" });
		return false;
	} catch {
		return true;
	}
});
const notRoot = process.getuid?.() !== 0;
const describeIf = missing.length || notRoot ? describe.skip : describe;
if (missing.length) console.log(`client-nodes: skipped, missing ${missing.join(", ")} (apt-get install dropbear-bin util-linux)`);
if (notRoot) console.log("client-nodes: skipped, needs root (a mount namespace for the SSH node's /root)");

describeIf("clusterplatform node run and distributor commands through a distributor worker over NATS", () => {
	let provisioner: TestProvisioner;
	let scratch: string;
	let node: ChildProcess | undefined;
	let env: Record<string, string>;
	let nats: TestServer | undefined;
	let worker: RunningProvisioner | undefined;
	let workerDir: string | undefined;
	let sshPort: number;
	// A loopback address of its own, as a node on a LAN has.
	const address = `127.77.${process.pid % 250}.${1 + Math.floor(Math.random() * 250)}`;
	/** The operator's step before a first script: accept the node's host key (dropbear's public key line). */
	const acceptHostKey = async (id: number) => {
		const line = execFileSync("dropbearkey", ["-y", "-f", path.join(scratch, "host_key")], { encoding: "utf8" }).split("\n").find((l) => l.startsWith("ssh-"))!;
		const own = `SHA256:${createHash("sha256").update(Buffer.from(line.split(" ")[1]!, "base64")).digest("base64").replace(/=+$/, "")}`;
		const [recorded, presented] = (await ok("node", "hostkey", String(id))).stdout.trim().split("\n");
		expect(presented).toBe(`presented: ${own}`);
		if (recorded === `recorded:  ${own}`) return;
		expect(recorded).toBe("recorded:  none (no script runs until one is accepted)");
		expect((await ok("node", "hostkey", String(id), "--hostKey", own)).stdout).toBe(`accepted ${own}\n`);
	};
	const ok = async (...args: string[]) => {
		const run = await cli(args, env);
		if (run.code !== 0) throw new Error(`clusterplatform ${args.join(" ")} exited ${run.code}: ${run.stderr}`);
		return run;
	};

	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-cli-nodes-"));
		// As deployed: the distributor worker is another node, reached over NATS (streamed output included).
		nats = await startNats();
		// The node is a stand-in on a loopback address, which a provisioner refuses unless told it is a lab.
		provisioner = await startTestProvisioner({ services: ["gateway", "localnodes", "scriptruns", "distributors", "sshkeys", "sshkey"], env: { TRANSPORTER: nats.url, ALLOW_LOOPBACK_NODES: "true" } });
		workerDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-cli-distributor-"));
		worker = await startProvisioner(
			loadConfig({ TRANSPORTER: nats.url, CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, DATA_DIR: workerDir, NODE_ID: `cli-distributor-${process.pid}`, LOG_LEVEL: "warn", PORT: "0", PUBLIC_URL: provisioner.baseUrl }),
			["distributor-worker"],
		);
		env = { CLUSTERPLATFORM_URL: provisioner.baseUrl, CLUSTERPLATFORM_TOKEN: TEST_ADMIN_TOKEN };
		const pair = JSON.parse((await ok("get", "sshkey", "--algorithm", "ed25519", "--json")).stdout);
		fs.writeFileSync(path.join(scratch, "id"), pair.privateKey);
		await ok("create", "sshkeys", "--file", path.join(scratch, "id"), "--artifactId", SITE, "--private", "true");
		sshPort = await freePort();
		node = startSshNode(scratch, address, sshPort, pair.publicKey);
		await waitForPort(sshPort, 10_000, address);
		await eventually(async () => {
			const rows = (await (await provisioner.api("/distributors")).json()).rows as { artifactId: string; online: boolean }[];
			return rows.some((r) => r.artifactId === SITE && r.online) || undefined;
		}, 20_000, "the site's distributor online");
	}, 60_000);
	afterAll(async () => {
		if (node?.pid && node.exitCode === null) {
			const exited = new Promise((resolve) => node!.once("exit", resolve));
			process.kill(node.pid, "SIGTERM");
			await exited;
		}
		await worker?.stop();
		await provisioner?.stop();
		await nats?.stop();
		if (workerDir) fs.rmSync(workerDir, { recursive: true, force: true });
		if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
	});

	it("runs a script on a registered node, prints its stdout and stderr, exits with its code, and audits the run", async () => {
		const registered = JSON.parse((await ok("create", "localnodes", "--ip", address, "--artifactId", SITE, "--pingable", "true", "--sshPort", String(sshPort), "--json")).stdout);
		await acceptHostKey(registered.id);
		const script = path.join(scratch, "hello.sh");
		fs.writeFileSync(script, 'echo "hello from $(hostname)"\necho "to stderr" >&2\nexit 3\n');
		const run = await cli(["node", "run", String(registered.id), script, "--timeout", "30s"], env);
		expect(run.stderr).toBe("to stderr\n");
		expect(run.stdout).toBe(`hello from ${os.hostname()}\n`);
		expect(run.code).toBe(3);
		// The script from stdin, and --json for the whole result.
		const piped = await cli(["node", "run", String(registered.id), "-", "--json"], env, "echo piped\n");
		expect(piped.code).toBe(0);
		expect(JSON.parse(piped.stdout)).toMatchObject({ code: 0, stdout: "piped\n", stderr: "" });
		const runs = JSON.parse((await ok("list", "scriptruns", "--json", "--pageSize", "100")).stdout).rows.filter((r: { localnodeId: number }) => r.localnodeId === registered.id);
		expect(runs.map((r: { code: number | null }) => r.code).sort()).toEqual([0, 3]);
		expect(runs.every((r: { status: string }) => r.status !== "running")).toBe(true);
		expect(runs.find((r: { code: number }) => r.code === 3)).toMatchObject({ caller: "test-admin", ip: address, scriptBytes: fs.statSync(script).size });
		// Output arrives while the script runs: the first line long before the script ends.
		const slow = await cli(["node", "run", String(registered.id), "-"], env, "echo first\nsleep 2\necho second\n");
		expect(slow.code).toBe(0);
		expect(slow.stdout).toBe("first\nsecond\n");
		const first = slow.stdoutTimes.find((t) => t.text.includes("first"))!;
		const second = slow.stdoutTimes.find((t) => t.text.includes("second"))!;
		expect(first.text).not.toContain("second");
		expect(second.at - first.at).toBeGreaterThan(1500);
		// The accepted key stays what the node is held to.
		expect(JSON.parse((await ok("get", "localnodes", String(registered.id), "--json")).stdout).hostKey).toMatch(/^SHA256:/);
		const node404 = await cli(["node", "run", "987654", script], env);
		expect(node404.code).toBe(3);
	}, 60_000);

	it("streams NDJSON to clients that ask for it, JSON to others, and audits a run whose client went away", async () => {
		const { id } = JSON.parse((await ok("create", "localnodes", "--ip", address, "--artifactId", SITE, "--sshPort", String(sshPort), "--json")).stdout);
		await acceptHostKey(id);
		const put = (accept: string, script: string, signal?: AbortSignal) =>
			provisioner.api(`/localnodes/${id}/script`, { method: "PUT", json: { script }, headers: { Accept: accept }, signal });
		const streamed = await put("application/x-ndjson", "echo a\necho b >&2\nexit 4\n");
		expect(streamed.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
		const records = (await streamed.text()).trim().split("\n").map((line) => JSON.parse(line));
		expect(records).toEqual(expect.arrayContaining([{ stdout: "a\n" }, { stderr: "b\n" }]));
		expect(records.at(-1)).toEqual({ code: 4, signal: null });
		const buffered = await put("application/json", "echo a\n");
		expect(await buffered.json()).toEqual({ code: 0, signal: null, stdout: "a\n", stderr: "" });
		// The client leaves after the first line; the script goes on and its end is still audited.
		const controller = new AbortController();
		const leaving = await put("application/x-ndjson", "echo started\nsleep 1\necho done-$((6*7))\nexit 6\n", controller.signal);
		const reader = leaving.body!.getReader();
		expect(new TextDecoder().decode((await reader.read()).value)).toContain("started");
		controller.abort();
		const audited = await eventually(async () => {
			const rows = JSON.parse((await ok("list", "scriptruns", "--json", "--pageSize", "1000")).stdout).rows as { localnodeId: number; code: number | null; status: string }[];
			return rows.find((r) => r.localnodeId === id && r.code === 6);
		}, 15_000, "the abandoned run audited with its exit code");
		expect(audited.status).not.toBe("running");
		// A script that outruns its time limit ends the stream with the reason: exit 5.
		const late = await cli(["node", "run", String(id), "-", "--timeout", "1s"], env, "echo waiting\nsleep 5\n");
		expect(late.stdout).toBe("waiting\n");
		expect(late.stderr).toMatch(/broke off: script on .* did not finish within 1000 ms/);
		expect(late.code).toBe(5);
	}, 60_000);

	it("finds the distributor by its site tag, refuses to switch on an unconfigured one (exit 7), configures it and switches it off", async () => {
		const row = await eventually(async () => {
			const rows = JSON.parse((await ok("list", "distributors", "--json")).stdout).rows as { id: number; artifactId: string; online: boolean }[];
			return rows.find((r) => r.artifactId === SITE && r.online);
		}, 20_000, "the distributor row");
		const on = await cli(["distributor", "on", SITE], env);
		expect(on.stderr).toMatch(/409 .*not configured/);
		expect(on.code).toBe(7);
		const store = storeFor(provisioner.config);
		const bios = (await store.putFile("boot/undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe")).url;
		const uefi = (await store.putFile("boot/ipxe.efi", "/usr/lib/ipxe/ipxe.efi")).url;
		const updated = JSON.parse((await ok("distributor", "update", SITE, "--ipxePxeUefiUrl", uefi, "--ipxePxeBiosUrl", bios, "--device", "lo", "--range", "127.0.0.1", "--json")).stdout);
		expect(updated).toMatchObject({ id: row.id, device: "lo", range: "127.0.0.1", ipxePxeUefiUrl: uefi, on: false });
		const off = JSON.parse((await ok("distributor", "off", String(row.id), "--json")).stdout);
		expect(off).toMatchObject({ id: row.id, on: false, state: "off" });
		// The same route through the generic `action` command, typed by the API's schema (a boolean).
		const viaAction = JSON.parse((await ok("action", "distributors", String(row.id), "status", "--on", "false", "--json")).stdout);
		expect(viaAction).toMatchObject({ id: row.id, on: false });
		const noSuchAction = await cli(["action", "distributors", String(row.id), "reboot"], env);
		expect(noSuchAction.code).toBe(2);
		expect(noSuchAction.stderr).toContain("one of status");
		const unknown = await cli(["distributor", "off", "no.such.site"], env);
		expect(unknown.code).toBe(3);
		expect(unknown.stderr).toContain('no distributor has the site tag "no.such.site"');
		const bad = await cli(["distributor", "update", String(row.id), "--ipxePxeUefiUrl", uefi, "--ipxePxeBiosUrl", bios, "--device", "lo;reboot", "--range", "127.0.0.1"], env);
		expect(bad.code).toBe(7);
		expect(bad.stderr).toMatch(/^ {2}device: /m);
	}, 60_000);
});
