import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { freePort } from "@clusterplatform/test-kit/ports";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { CLI, cli, cliOk } from "@clusterplatform/test-kit/processes";
import { scratchDir } from "@clusterplatform/test-kit/scratch";

const LABEL = "CPP CLI TEST";
const READ_ONLY_TOKEN = generateToken();

describe("clusterplatform client commands against a running provisioner", () => {
	let provisioner: TestProvisioner;
	let scratch: string;
	let env: Record<string, string>;
	const ok = (...args: string[]) => cliOk(args, env);
	const file = (name: string, text: string) => {
		const target = path.join(scratch, name);
		fs.writeFileSync(target, text);
		return target;
	};

	beforeAll(async () => {
		scratch = scratchDir("cpp-cli-client-");
		provisioner = await startTestProvisioner({
			services: ["gateway", "mainscripts", "kickstarts", "sshkeys", "ipxes", "ipxes-worker", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"],
			env: { API_TOKENS: [tokenEntry("test-admin", TEST_ADMIN_TOKEN, false), tokenEntry("viewer", READ_ONLY_TOKEN, true)].join(",") },
		});
		env = { CLUSTERPLATFORM_URL: provisioner.baseUrl, CLUSTERPLATFORM_TOKEN: TEST_ADMIN_TOKEN };
	}, 60_000);
	afterAll(async () => {
		await provisioner?.stop();
	});

	it("takes a newcomer from nothing to a downloaded, bootable-looking ISO with the CLI alone", async () => {
		const mainscript = file("boot.ipxe", "#!ipxe\necho booted by the CLI test\nshell\n");
		const mainscriptId = (await ok("create", "mainscripts", "--file", mainscript, "-q")).stdout.trim();
		expect(mainscriptId).toMatch(/^\d+$/);
		const embed = file("embed.ipxe", `#!ipxe\ndhcp\nchain ${provisioner.baseUrl}/api/mainscripts/${mainscriptId}\n`);
		const build = async (...args: string[]) => (await ok("build", ...args, "--wait", "-q")).stdout.trim();
		const ipxeUefi = await build("ipxe", "--script", `@${embed}`, "--platform", "bin-x86_64-efi", "--driver", "ipxe", "--extension", "efi");
		const ipxeBios = await build("ipxe", "--script", `@${embed}`, "--platform", "bin", "--driver", "ipxe", "--extension", "lkrn");
		const grubImg = await build("grub", "--label", LABEL, "--architecture", "x64", "--fragment", "img");
		const grubEfi = await build("grub", "--label", LABEL, "--architecture", "x64", "--fragment", "efi");
		const ldLinux = await build("syslinux", "--fragment", "ldlinux.c32");
		const isolinuxBin = await build("syslinux", "--fragment", "isolinux.bin");
		const isohdpfxBin = await build("syslinux", "--fragment", "isohdpfx.bin");
		for (const id of [ipxeUefi, ipxeBios, grubImg, grubEfi, ldLinux, isolinuxBin, isohdpfxBin]) expect(id).toMatch(/^\d+$/);

		const iso = await ok(
			"build", "iso", "--label", LABEL, "--script", `@${embed}`,
			"--ipxeUefiId", ipxeUefi, "--ipxeBiosId", ipxeBios, "--grubImgId", grubImg, "--grubEfiX64Id", grubEfi,
			"--ldLinuxId", ldLinux, "--isolinuxBinId", isolinuxBin, "--isohdpfxBinId", isohdpfxBin,
			"--wait", "--json",
		);
		const row = JSON.parse(iso.stdout);
		expect(row).toMatchObject({ status: "done", progress: 100, label: LABEL, grubImgId: Number(grubImg) });
		// Not a terminal: one line per change of the build's progress, ending at done.
		const lines = iso.stderr.trim().split("\n");
		expect(lines.length).toBeGreaterThanOrEqual(1);
		for (const line of lines) expect(line).toMatch(new RegExp(`^isos ${row.id}: (queued|working|done) \\d+%$`));
		const percents = lines.map((line) => Number(/(\d+)%$/.exec(line)![1]));
		expect(percents).toEqual([...percents].sort((a, b) => a - b));
		expect(lines.at(-1)).toBe(`isos ${row.id}: done 100%`);

		expect((await ok("get", "isos", String(row.id), "--value", "url")).stdout).toBe(`${row.url}\n`);
		const noField = await cli(["get", "isos", String(row.id), "--value", "colour"], env);
		expect(noField.code).toBe(2);
		expect(noField.stderr).toMatch(/--value colour: the answer has no such field; it has id, .*url/);
		const target = path.join(scratch, "dist.iso");
		const download = await ok("download", "isos", String(row.id), "-o", target);
		const size = fs.statSync(target).size;
		expect(download.stdout).toContain(`${target}: ${size} bytes`);
		expect(fs.existsSync(`${target}.part`)).toBe(false);
		const fd = fs.openSync(target, "r");
		const magic = Buffer.alloc(5);
		fs.readSync(fd, magic, 0, 5, 0x8001);
		fs.closeSync(fd);
		expect(magic.toString("latin1")).toBe("CD001");
		const listing = execFileSync("xorriso", ["-indev", target, "-find", "/", "-type", "f"], { stdio: ["ignore", "pipe", "ignore"] }).toString();
		for (const entry of ["/ipxe.efi", "/ipxe.lkrn", "/script.ipxe", "/boot/grub.img", "/isolinux/isolinux.bin"]) expect(listing).toContain(`'${entry}'`);
	}, 300_000);

	it("lists, gets and deletes rows, with --json for scripts and tables for people", async () => {
		const text = "#!ipxe\necho listed\n";
		const created = JSON.parse((await cli(["create", "mainscripts", "--file", "-", "--json"], env, text)).stdout);
		expect(created).toMatchObject({ id: expect.any(Number), text });
		const page = JSON.parse((await ok("list", "mainscripts", "--json", "--pageSize", "100")).stdout);
		expect(page.rows.map((r: { id: number }) => r.id)).toContain(created.id);
		const table = (await ok("list", "mainscripts")).stdout.split("\n");
		expect(table[0]).toMatch(/^id\s+text$/);
		expect(table.some((line) => line.startsWith(`${created.id} `) && line.includes("#!ipxe⏎echo listed"))).toBe(true);
		expect(JSON.parse((await ok("get", "mainscripts", String(created.id), "--json")).stdout).text).toBe(text);
		expect((await ok("get", "mainscripts", String(created.id))).stdout).toContain("text:\n    #!ipxe\n    echo listed");
		// A registry with more fields: the field's type comes from the API (a boolean here).
		const key = JSON.parse((await ok("create", "sshkeys", "--file", file("key.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq example\n"), "--artifactId", "site.example", "--private", "false", "--json")).stdout);
		expect(key).toMatchObject({ artifactId: "site.example", private: false });
		expect((await ok("delete", "mainscripts", String(created.id))).stdout.trim()).toBe(`deleted mainscripts ${created.id}`);
		const gone = await cli(["get", "mainscripts", String(created.id)], env);
		expect(gone.code).toBe(3);
		expect(gone.stderr).toContain("404");
		expect((await ok("resources")).stdout).toMatch(/^isos\s+list get create delete$/m);
	});

	it.each([
		["a row that does not exist", ["get", "kickstarts", "987654"], {}, 3, /404 .*not found/],
		["a wrong token", ["list", "mainscripts"], { CLUSTERPLATFORM_TOKEN: "cpp_wrong" }, 4, /401/],
		["no token at all", ["list", "mainscripts"], { CLUSTERPLATFORM_TOKEN: "" }, 4, /401 .*--token/],
		["a read-only token on a change", ["create", "mainscripts", "-F", "text=#!ipxe"], { CLUSTERPLATFORM_TOKEN: READ_ONLY_TOKEN }, 4, /403/],
		["an unknown resource", ["list", "nonsense"], {}, 2, /unknown resource "nonsense"; this gateway serves: .*mainscripts/],
		["a missing file", ["create", "mainscripts", "--file", "/nonexistent/boot.ipxe"], {}, 2, /cannot read --file \/nonexistent\/boot.ipxe/],
		["a malformed gateway URL", ["list", "mainscripts"], { CLUSTERPLATFORM_URL: "ftp://x" }, 2, /http:\/\/ or https:\/\//],
	])("exits with the documented code for %s", async (_what, args, extraEnv, code, message) => {
		const run = await cli(args as string[], { ...env, ...(extraEnv as Record<string, string>) });
		expect(run.stderr).toMatch(message as RegExp);
		expect(run.code).toBe(code);
	});

	it("exits 7 on a refused input and prints each field the API names with its reason", async () => {
		const run = await cli(["build", "grub", "--label", LABEL, "--architecture", "x64", "--fragment", "floppy", "--wait"], env);
		expect(run.code).toBe(7);
		expect(run.stderr).toMatch(/422/);
		expect(run.stderr).toMatch(/^ {2}fragment: .*(img|efi)/m);
		const unknown = await cli(["create", "mainscripts", "-F", "text=#!ipxe", "--colour", "blue"], env);
		expect(unknown.code).toBe(7);
		expect(unknown.stderr).toMatch(/^ {2}colour: /m);
	});

	it("exits 6 when the gateway cannot be reached", async () => {
		const run = await cli(["list", "mainscripts"], { ...env, CLUSTERPLATFORM_URL: `http://127.0.0.1:${await freePort()}` });
		expect(run.code).toBe(6);
		expect(run.stderr).toMatch(/cannot reach the gateway at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
	});

	it("exits 1 with the row's reason when a build fails, and 5 when --wait runs out of time", async () => {
		const gone = `${provisioner.baseUrl}/api/artifacts/syslinuxs/999999/isohdpfx.bin`;
		const parts = (await ok("list", "syslinuxs", "--json", "--pageSize", "100")).stdout;
		const byFragment = (fragment: string) => String(JSON.parse(parts).rows.find((r: { fragment: string; status: string }) => r.fragment === fragment && r.status === "done").id);
		const grubs = JSON.parse((await ok("list", "grubs", "--json", "--search", LABEL, "--searchFields", "label")).stdout).rows;
		const ipxes = JSON.parse((await ok("list", "ipxes", "--json")).stdout).rows;
		const failed = await cli([
			"build", "iso", "--label", LABEL,
			"--ipxeUefiId", String(ipxes.find((r: { extension: string }) => r.extension === "efi").id),
			"--ipxeBiosId", String(ipxes.find((r: { extension: string }) => r.extension === "lkrn").id),
			"--grubImgId", String(grubs.find((r: { fragment: string }) => r.fragment === "img").id),
			"--ldLinuxId", byFragment("ldlinux.c32"), "--isolinuxBinId", byFragment("isolinux.bin"), "-F", `isohdpfxBinUrl=${gone}`,
			"--wait", "--no-progress",
		], env);
		expect(failed.stderr).toMatch(/^clusterplatform: isos \d+ failed: .*isohdpfxBinUrl.*not in the store/m);
		expect(failed.code).toBe(1);
		expect(failed.stdout).toBe("");
		// A fresh GRUB build takes seconds; a 1 ms wait cannot see it finish.
		const slow = await cli(["build", "grub", "--label", "CPP CLI SLOW", "--architecture", "x64", "--fragment", "img", "--wait", "--timeout", "1ms"], env);
		expect(slow.stderr).toMatch(/grubs (\d+) is still (queued|working) .* after 1ms; it goes on: clusterplatform wait grubs \1/);
		expect(slow.code).toBe(5);
		const id = /grubs (\d+) is still/.exec(slow.stderr)![1]!;
		const waited = await ok("wait", "grubs", id, "--json", "--no-progress");
		expect(JSON.parse(waited.stdout)).toMatchObject({ id: Number(id), status: "done", progress: 100 });
	}, 120_000);

	it("draws the progress as one redrawn line on a terminal, even with -q", async () => {
		const quote = (arg: string) => `'${arg.replace(/'/g, "'\\''")}'`;
		const command = [process.execPath, CLI, "build", "grub", "--label", "CPP CLI TTY", "--architecture", "x64", "--fragment", "efi", "--wait", "-q"].map(quote).join(" ");
		// util-linux `script` gives the command a pseudo-terminal, as an operator's shell would.
		const { stdout } = await promisify(execFile)("script", ["-q", "-e", "-c", command, "/dev/null"], { env: { ...process.env, ...env }, timeout: 120_000 });
		const id = /\r\n(\d+)\r\n/.exec(stdout)?.[1];
		expect(id).toMatch(/^\d+$/);
		expect(stdout).toContain(`\r\x1b[2Kgrubs ${id} [${"#".repeat(30)}] 100% done`);
		expect(stdout).not.toMatch(/grubs \d+: /);
	}, 120_000);

	it("prints the fields of an operation from the gateway's own description", async () => {
		const help = await ok("create", "sshkeys", "--help");
		expect(help.stdout).toContain("--text (required)  string");
		expect(help.stdout).toContain("--private");
		expect((await ok("build", "iso", "--help")).stdout).toMatch(/--ipxeUefiId {2}integer/);
		const usage = await ok("--help");
		expect(usage.stdout).toContain("Exit codes:");
	});
});
