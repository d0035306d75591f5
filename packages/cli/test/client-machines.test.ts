import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { CLI, cli, cliOk } from "@clusterplatform/test-kit/processes";
import { freeUdpPort, startIpmiSim, type IpmiSim } from "@clusterplatform/test-kit/ipmi-sim";
import { eventually } from "@clusterplatform/test-kit/ports";
import { describeIf, missingProgram } from "@clusterplatform/test-kit/requirements";
import { scratchDir } from "@clusterplatform/test-kit/scratch";

/** How long a test waits for the CLI to print what it is waiting for (it polls every second). */
const LINE_WAIT_MS = 30_000;

/**
 * The machines' faces in the CLI against a provisioner in this process: import (CSV and JSON),
 * the generic commands spelt `machines …`, the plan, and waiting for machines whose status the
 * test moves through the API, as a booting machine's would move.
 */
describe("clusterplatform machines, power, provision", () => {
	let provisioner: TestProvisioner;
	let scratch: string;
	let env: Record<string, string>;
	const ok = (...args: string[]) => cliOk(args, env);
	const file = (name: string, text: string) => {
		const target = path.join(scratch, name);
		fs.writeFileSync(target, text);
		return target;
	};
	const machineByName = async (name: string) => {
		const page = await (await provisioner.api(`/machines?search=${encodeURIComponent(name)}&searchFields=name`)).json();
		return page.rows.find((row: { name: string }) => row.name === name) as { id: number; name: string; status: string };
	};
	const setStatus = async (id: number, status: string, statusReason?: string) => {
		const response = await provisioner.api(`/machines/${id}`, { method: "PUT", json: { status, ...(statusReason ? { statusReason } : {}) } });
		expect(response.status).toBe(200);
	};

	beforeAll(async () => {
		scratch = scratchDir("cpp-cli-machines-");
		provisioner = await startTestProvisioner({ services: ["gateway", "machines", "profiles", "selectors"] });
		env = { CLUSTERPLATFORM_URL: provisioner.baseUrl, CLUSTERPLATFORM_TOKEN: TEST_ADMIN_TOKEN };
		const profile = await (await provisioner.api("/profiles", { method: "POST", json: { name: "web", ipxeScript: "#!ipxe\necho web profile for {{name}} on {{mac}}\nexit\n" } })).json();
		const selector = await provisioner.api("/selectors", { method: "POST", json: { name: "web-role", profileId: profile.id, labels: { role: "web" } } });
		expect(selector.status).toBe(201);
	}, 60_000);
	afterAll(async () => {
		await provisioner?.stop();
	});

	it("imports machines from CSV and from JSON, and names the bad row of a refused import", async () => {
		const csv = file("machines.csv", "name,macs,arch,firmware,labels\nweb-01,52:54:00:00:01:01,x86_64,uefi,role=web\nweb-02,52:54:00:00:01:02 52:54:00:00:01:12,x86_64,bios,role=web\n");
		const imported = await ok("machines", "import", csv);
		expect(imported.stdout).toMatch(/^imported 2 machines: \d+, \d+\n$/);
		const json = file("machines.json", JSON.stringify([{ name: "db-01", macs: ["52:54:00:00:02:01"], labels: { role: "db" } }]));
		const quiet = await ok("machines", "import", json, "-q");
		expect(quiet.stdout).toMatch(/^\d+\n$/);
		expect((await machineByName("db-01")).id).toBe(Number(quiet.stdout.trim()));

		const bad = await cli(["machines", "import", file("bad.csv", "name,macs\nweb-03,52:54:00:00:01:03\nweb-04,not-a-mac\n")], env);
		expect(bad.code).toBe(7);
		expect(bad.stderr).toMatch(/^ {2}csv line 3\.macs: /m);
		expect(await machineByName("web-03")).toBeUndefined();
		const notJson = await cli(["machines", "import", file("broken.json", "[{")], env);
		expect(notJson.code).toBe(2);
		expect(notJson.stderr).toMatch(/broken\.json is not valid JSON/);
	});

	it("spells the generic commands `machines list|get|update …`", async () => {
		const listed = JSON.parse((await ok("machines", "list", "--label", "role=web", "--json")).stdout);
		expect(listed.rows.map((row: { name: string }) => row.name).sort()).toEqual(["web-01", "web-02"]);
		const web02 = await machineByName("web-02");
		expect((await ok("machines", "get", String(web02.id), "--value", "macs")).stdout).toBe('["52:54:00:00:01:02","52:54:00:00:01:12"]\n');
		expect((await ok("machines", "update", String(web02.id), "--hostname", "web-02.lab", "--value", "hostname")).stdout).toBe("web-02.lab\n");
		const table = (await ok("machines", "list", "--status", "unknown")).stdout;
		expect(table.split("\n")[0]).toMatch(/^id\s+name\b/);
		expect(table).toContain("db-01");
	});

	it("shows a machine's plan: profile, selector and why, and the rendered script", async () => {
		const web01 = await machineByName("web-01");
		const plan = (await ok("machines", "plan", String(web01.id))).stdout;
		expect(plan).toMatch(/^profile: +\d+ web$/m);
		expect(plan).toMatch(/^selector: +\d+ web-role$/m);
		expect(plan).toMatch(/^why: +selector "web-role" matches on /m);
		expect(plan).toContain("--- ipxe ---\n#!ipxe\necho web profile for web-01 on 52:54:00:00:01:01\nexit\n");
		// A machine no selector matches: no profile, and why.
		const db01 = await machineByName("db-01");
		const none = JSON.parse((await ok("machines", "plan", String(db01.id), "--json")).stdout);
		expect(none).toMatchObject({ profile: null, selector: null, why: expect.stringMatching(/MACHINES_UNKNOWN_BOOT/) });
	});

	it("waits for machines with a line per status change, exiting 1 when one of them failed", async () => {
		const [web01, web02] = [await machineByName("web-01"), await machineByName("web-02")];
		await setStatus(web01.id, "provisioning", "booting profile web");
		await setStatus(web02.id, "provisioning", "booting profile web");
		const run = streamCli(["machines", "wait", String(web01.id), String(web02.id), "--timeout", "2m"], env);
		// The machines move only once the CLI has reported where they were.
		await run.stderrMatches(new RegExp(`machine ${web02.id} web-02: provisioning \\(booting profile web\\)\\n`));
		await setStatus(web01.id, "ready", "registered as localnode 7");
		await run.stderrMatches(new RegExp(`machine ${web01.id} web-01: ready`));
		await setStatus(web02.id, "failed", "no boot seen within 10 minutes (last step: dhcp)");
		const { code, stdout, stderr } = await run.done;
		expect(code).toBe(1);
		const lines = stderr.trim().split("\n");
		expect(lines.filter((line) => line.startsWith(`machine ${web01.id} `))).toEqual([`machine ${web01.id} web-01: provisioning (booting profile web)`, `machine ${web01.id} web-01: ready (registered as localnode 7)`]);
		expect(lines.filter((line) => line.startsWith(`machine ${web02.id} `))).toEqual([
			`machine ${web02.id} web-02: provisioning (booting profile web)`,
			`machine ${web02.id} web-02: failed (no boot seen within 10 minutes (last step: dhcp))`,
		]);
		expect(lines.at(-1)).toBe(`clusterplatform: 1 of 2 machines failed: ${web02.id}`);
		expect(stdout).toMatch(new RegExp(`^${web01.id} +web-01 +ready +registered as localnode 7$`, "m"));
		expect(stdout).toMatch(new RegExp(`^${web02.id} +web-02 +failed`, "m"));

		// All ready: exit 0; `wait machines …` is the same command.
		await setStatus(web02.id, "ready", "registered");
		const settled = await cli(["wait", "machines", String(web01.id), String(web02.id), "--json"], env);
		expect(settled.code).toBe(0);
		expect(JSON.parse(settled.stdout).map((row: { status: string }) => row.status)).toEqual(["ready", "ready"]);
	}, 120_000);

	it("gives up after --timeout with exit 5, naming the machines still going", async () => {
		const db01 = await machineByName("db-01");
		await setStatus(db01.id, "provisioning", "booting");
		const run = await cli(["machines", "wait", String(db01.id), "--timeout", "1500ms"], env);
		expect(run.code).toBe(5);
		expect(run.stderr).toContain(`machine ${db01.id} db-01: provisioning (booting)\n`);
		expect(run.stderr).toContain(`clusterplatform: not settled after 1500ms: machine ${db01.id} is provisioning; they go on: clusterplatform machines wait ${db01.id}`);
	});

	it.each([
		[["power", "1", "explode"], /power: "explode" is not one of on, off, cycle, status/],
		[["power", "web-01", "on"], /"web-01" is not a machine id/],
		[["power", "1"], /missing the power action/],
		[["power", "1", "on", "now"], /unexpected "now"/],
		[["power", "1", "on", "--force"], /power takes no fields, got --force/],
		[["provision"], /provision: name at least one machine id/],
		[["provision", "1", "1"], /machine 1 is named twice/],
		[["provision", "1", "--profile", "web"], /--profile must be a profile id/],
		[["provision", "1", "--colour", "red"], /provision takes only --profile N, got --colour/],
		[["provision", "1", "--wait", "--timeout", "soon"], /--timeout must be a duration/],
		[["machines", "frob"], /machines frob: use list, get, create, update, delete, import, plan or wait/],
		[["machines", "import"], /missing the file/],
		[["machines", "plan", "0"], /"0" is not a machine id/],
		[["machines", "wait"], /name at least one machine id/],
	])("refuses %j before sending anything (exit 2)", async (args, message) => {
		const run = await cli(args, env);
		expect(run.stderr).toMatch(message);
		expect(run.code).toBe(2);
	});

	it("answers 404 (exit 3) for a machine that does not exist", async () => {
		const plan = await cli(["machines", "plan", "987654"], env);
		expect(plan.code).toBe(3);
		const wait = await cli(["machines", "wait", "987654", "--timeout", "5s"], env);
		expect(wait.code).toBe(3);
	});
});

const SITE = `cli-bmc-${process.pid}.example`;

/**
 * power and provision through a real BMC: OpenIPMI's ipmi_sim on 127.0.0.1 holding a QEMU guest's
 * power, called by the site's distributor worker (in the provisioner's process). The guest has no
 * network here: provisioning is followed to `provisioning`, and the test moves it on through the API.
 */
describeIf(missingProgram(["dnsmasq", "ipmi_sim", "ipmitool", "qemu-system-x86_64"]), "clusterplatform power and provision against ipmi_sim", () => {
	let provisioner: TestProvisioner;
	let sim: IpmiSim;
	let env: Record<string, string>;
	let withBmc: number;
	let withoutBmc: number;
	const run = async (...args: string[]) => {
		const result = await cli(args, env);
		// The BMC's password is never printed, whatever the command says.
		expect(`${result.stdout}${result.stderr}`).not.toContain(sim.password);
		return result;
	};
	const create = async (json: object) => {
		const response = await provisioner.api("/machines", { method: "POST", json });
		expect(response.status).toBe(201);
		return ((await response.json()) as { id: number }).id;
	};

	beforeAll(async () => {
		sim = await startIpmiSim({ port: await freeUdpPort(), qemuArgs: ["-machine", "accel=kvm:tcg"] });
		provisioner = await startTestProvisioner({
			services: ["gateway", "machines", "profiles", "selectors", "distributors", "distributor-worker"],
			env: { CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT: "0" },
		});
		env = { CLUSTERPLATFORM_URL: provisioner.baseUrl, CLUSTERPLATFORM_TOKEN: TEST_ADMIN_TOKEN };
		await eventually(async () => ((await (await provisioner.api("/distributors")).json()).rows as { online: boolean }[]).some((row) => row.online), 30_000, "the site's distributor online");
		withBmc = await create({ name: "bmc-guest", macs: ["52:54:00:00:03:01"], artifactId: SITE, bmcProtocol: "ipmi", bmcAddress: sim.address, bmcPort: sim.port, bmcUser: sim.user, bmcPassword: sim.password });
		withoutBmc = await create({ name: "no-bmc", macs: ["52:54:00:00:03:02"], artifactId: SITE });
	}, 120_000);
	afterAll(async () => {
		await provisioner?.stop();
		await sim?.stop();
	}, 60_000);

	it("reads and switches the guest's power: the QEMU process starts and ends", async () => {
		expect((await run("power", String(withBmc), "status")).stdout).toBe(`machine ${withBmc}: power off\n`);
		expect(sim.qemuPid()).toBeNull();
		const on = await run("power", String(withBmc), "on");
		expect(on.stdout).toBe(`machine ${withBmc}: power on (after on)\n`);
		expect(sim.qemuPid()).not.toBeNull();
		expect(JSON.parse((await run("power", String(withBmc), "status", "--json")).stdout)).toEqual({ id: withBmc, power: "on", action: "status" });
		const off = await run("power", String(withBmc), "off");
		expect(off.stdout).toBe(`machine ${withBmc}: power off (after off)\n`);
		await eventually(() => sim.qemuPid() === null, 15_000, "the guest's QEMU process gone");
		const refused = await run("power", String(withoutBmc), "on");
		expect(refused.code).toBe(7);
		expect(refused.stderr).toMatch(/422/);
	}, 120_000);

	it("provisions with --wait: power-cycled, a line as its status moves, exit 0 once it is ready", async () => {
		const waiting = streamCli(["provision", String(withBmc), "--wait", "--timeout", "2m"], env);
		await waiting.stderrMatches(new RegExp(`machine ${withBmc} bmc-guest: provisioning \\(power-cycled through BMC`));
		expect(sim.qemuPid()).not.toBeNull();
		const registered = await provisioner.api(`/machines/${withBmc}`, { method: "PUT", json: { status: "ready", statusReason: "registered (moved by the test)" } });
		expect(registered.status).toBe(200);
		const { code, stdout, stderr } = await waiting.done;
		expect(stderr).not.toContain(sim.password);
		expect(code).toBe(0);
		expect(stderr).toContain(`machine ${withBmc} bmc-guest: ready (registered (moved by the test))\n`);
		expect(stdout).toMatch(new RegExp(`^${withBmc} +bmc-guest +ready`, "m"));
	}, 120_000);

	it("provisions several at once and says which were refused (exit 1)", async () => {
		const both = await run("provision", String(withBmc), String(withoutBmc));
		expect(both.code).toBe(1);
		expect(both.stderr).toMatch(new RegExp(`^machine ${withoutBmc}: not provisioned: 422 `, "m"));
		expect(both.stdout).toMatch(new RegExp(`^${withBmc} +bmc-guest +provisioning`, "m"));
		expect(both.stdout).not.toContain("no-bmc");
		await run("power", String(withBmc), "off");
	}, 120_000);
});

/** The CLI as a process whose stderr the test can wait on while it runs; killed after 2 minutes. */
function streamCli(args: string[], env: Record<string, string>) {
	const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, stdio: ["ignore", "pipe", "pipe"] });
	let stdout = "";
	let stderr = "";
	child.stdout.on("data", (chunk) => (stdout += chunk));
	child.stderr.on("data", (chunk) => (stderr += chunk));
	const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
	const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
		child.once("close", (code) => {
			clearTimeout(timer);
			resolve({ code, stdout, stderr });
		}),
	);
	return {
		done,
		/** Bounded: resolves once stderr matches, rejects with what it printed otherwise. */
		async stderrMatches(pattern: RegExp): Promise<void> {
			const deadline = Date.now() + LINE_WAIT_MS;
			while (!pattern.test(stderr)) {
				if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the CLI did not print ${pattern} (exit ${child.exitCode}); stderr:\n${stderr}`);
				await new Promise((resolve) => setTimeout(resolve, 100));
			}
		},
	};
}
