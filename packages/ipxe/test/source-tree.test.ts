import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { IpxeSourceTree, type Target } from "../src";
import { eventually } from "@clusterplatform/test-kit/ports";

/**
 * How IpxeSourceTree manages prepared trees and their copies (preparation shared by concurrent
 * builds, spare copies claimed once, failed builds leaving the prepared tree intact, abandoned
 * copies removed) — with real make on a tiny fixture tree whose Makefile copies EMBED into the
 * output, so this runs in CI without an iPXE checkout. Real iPXE builds: ipxes-source.test.ts.
 */
const FIXTURE_MAKEFILE = `
bin-x86_64-pcbios/ipxe.lkrn: $(EMBED)
	@echo "$(EMBED)" >> $(FIXTURE_MAKE_LOG)
	@if grep -q FAIL $(EMBED); then echo "fixture: refusing to build" >&2; exit 1; fi
	@mkdir -p bin-x86_64-pcbios
	@sleep $(or $(FIXTURE_SLEEP),0.2)
	@{ echo "built by $(CURDIR) $(wildcard spare-marker)"; cat $(EMBED); } > $@
`;

const TARGET: Target = { platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "lkrn" };

describe("IpxeSourceTree on a fixture tree", () => {
	let root: string;
	let tree: IpxeSourceTree;
	let makeLog: string;
	const workDirs: string[] = [];
	const workDir = () => {
		const dir = fs.mkdtempSync(path.join(root, "job-"));
		workDirs.push(dir);
		return dir;
	};
	const makeRuns = () => (fs.existsSync(makeLog) ? fs.readFileSync(makeLog, "utf8").trim().split("\n").length : 0);

	beforeEach(() => {
		root = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-ipxe-tree-"));
		const src = path.join(root, "ipxe", "src");
		fs.mkdirSync(path.join(src, "include", "ipxe"), { recursive: true });
		fs.writeFileSync(path.join(src, "Makefile"), FIXTURE_MAKEFILE);
		makeLog = path.join(root, "make.log");
		process.env.FIXTURE_MAKE_LOG = makeLog;
		tree = new IpxeSourceTree(path.join(root, "ipxe"), path.join(root, "trees"), 2);
	});
	afterEach(async () => {
		delete process.env.FIXTURE_SLEEP;
		await tree.idle();
		fs.rmSync(root, { recursive: true, force: true });
	});

	/** What lies beside the prepared tree once the finished builds' copies are removed (that happens in the background). */
	const entries = async () => {
		const parent = path.dirname(await tree.preparedDir(TARGET.platform));
		return eventually(() => {
			const names = fs.readdirSync(parent).sort();
			return names.some((name) => name.includes(".building-")) ? undefined : names;
		}, 10_000, "build copies removed");
	};

	it("prepares once (two builds), then builds each script in its own copy; a spare copy is waiting afterwards", async () => {
		const output = await tree.build(TARGET, "#!ipxe\necho one\n", workDir());
		expect(fs.readFileSync(output, "utf8")).toContain("echo one");
		const manifest = await tree.manifest(TARGET.platform);
		expect(manifest?.buildSeconds).toHaveLength(2);
		expect(makeRuns()).toBe(3);
		await tree.idle();
		expect(await entries()).toEqual([TARGET.platform, expect.stringMatching(/^bin-x86_64-pcbios\.spare-[0-9a-f]+$/)]);

		// The next build claims that spare (it is gone, a new one is made) and never builds in the prepared tree.
		const spare = (await entries())[1];
		const second = await tree.build(TARGET, "#!ipxe\necho two\n", workDir());
		expect(fs.readFileSync(second, "utf8")).toMatch(/built by .*\.building-[0-9a-f]+ \n#!ipxe\necho two/);
		await tree.idle();
		expect(await entries()).not.toContain(spare);
		expect(await entries()).toHaveLength(2);
		expect(fs.existsSync(path.join(await tree.preparedDir(TARGET.platform), "bin-x86_64-pcbios", "ipxe.lkrn"))).toBe(true);
		expect(fs.readFileSync(path.join(await tree.preparedDir(TARGET.platform), "bin-x86_64-pcbios", "ipxe.lkrn"), "utf8")).toContain("prepared tree (2)");
	});

	it("concurrent builds share one preparation and each get their own script", async () => {
		const scripts = Array.from({ length: 5 }, (_, i) => `#!ipxe\necho concurrent ${i}\n`);
		const outputs = await Promise.all(scripts.map((script) => tree.build(TARGET, script, workDir())));
		outputs.forEach((output, i) => expect(fs.readFileSync(output, "utf8")).toContain(`echo concurrent ${i}`));
		expect(makeRuns()).toBe(2 + scripts.length);
		const builtIn = outputs.map((output) => /built by (\S+)/.exec(fs.readFileSync(output, "utf8"))![1]);
		expect(new Set(builtIn).size).toBe(scripts.length);
	});

	it("a failed build reports make's output and leaves the prepared tree usable", async () => {
		await tree.build(TARGET, "#!ipxe\necho fine\n", workDir());
		await expect(tree.build(TARGET, "#!ipxe\necho FAIL\n", workDir())).rejects.toThrow(/make exited with code 2[\s\S]*fixture: refusing to build/);
		const after = await tree.build(TARGET, "#!ipxe\necho fine again\n", workDir());
		expect(fs.readFileSync(after, "utf8")).toContain("fine again");
	});

	it("removes copies a dead worker left (scratch, half-made spare, build copy) but keeps complete spares", async () => {
		await tree.build(TARGET, "#!ipxe\necho first\n", workDir());
		await tree.idle();
		const parent = path.dirname(await tree.preparedDir(TARGET.platform));
		const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
		const leftovers = ["bin-x86_64-pcbios.preparing-dead", "bin-x86_64-pcbios.spare-dead.partial", "bin-x86_64-pcbios.building-dead"];
		for (const name of leftovers) {
			fs.mkdirSync(path.join(parent, name));
			fs.utimesSync(path.join(parent, name), old, old);
		}
		const spare = fs.readdirSync(parent).find((name) => /\.spare-[0-9a-f]+$/.test(name))!;
		fs.writeFileSync(path.join(parent, spare, "spare-marker"), "");
		fs.utimesSync(path.join(parent, spare), old, old);
		const young = path.join(parent, "bin-x86_64-pcbios.building-alive");
		fs.mkdirSync(young);

		// Two concurrent builds: one takes the old-looking (but complete) spare, the other copies.
		const outputs = await Promise.all([tree.build(TARGET, "#!ipxe\necho a\n", workDir()), tree.build(TARGET, "#!ipxe\necho b\n", workDir())]);
		expect(outputs.filter((output) => fs.readFileSync(output, "utf8").includes("spare-marker"))).toHaveLength(1);
		const now = fs.readdirSync(parent);
		for (const name of leftovers) expect(now).not.toContain(name);
		expect(now).toContain("bin-x86_64-pcbios.building-alive");
	});

	it("shows each platform's state, and a stopping worker ends a preparation in progress; the next prepare starts afresh", async () => {
		expect(await tree.states([TARGET.platform])).toEqual([{ platform: TARGET.platform, state: "not prepared" }]);
		process.env.FIXTURE_SLEEP = "30";
		const preparing = tree.prepare(TARGET);
		expect(await tree.states([TARGET.platform])).toEqual([{ platform: TARGET.platform, state: "preparing" }]);
		const started = Date.now();
		await tree.stopPreparations();
		expect(Date.now() - started).toBeLessThan(10_000);
		await expect(preparing).rejects.toThrow();
		// make's children went with it (the fixture's `sleep 30` stands for the compilers).
		expect(spawnSync("pgrep", ["-f", "^sleep 30$"]).stdout.toString().trim()).toBe("");
		expect((await tree.states([TARGET.platform]))[0]).toMatchObject({ state: "failed", error: expect.any(String) });
		// Nothing half-made is left as if prepared.
		expect(await tree.manifest(TARGET.platform)).toBeNull();
		delete process.env.FIXTURE_SLEEP;
		await tree.prepare(TARGET);
		expect((await tree.states([TARGET.platform]))[0]).toMatchObject({ state: "prepared", seconds: expect.any(Number) });
	}, 30_000);

	it("waits while another live process holds the platform's preparation lock, and uses the tree it prepared", async () => {
		const dir = await tree.preparedDir(TARGET.platform);
		fs.mkdirSync(path.dirname(dir), { recursive: true });
		const other = spawn("sleep", ["30"], { stdio: "ignore" });
		try {
			fs.writeFileSync(`${dir}.lock`, String(other.pid));
			const preparing = tree.prepare(TARGET);
			await new Promise((resolve) => setTimeout(resolve, 1500));
			expect(makeRuns()).toBe(0);
			// The other process finishes: its tree and manifest appear, its lock goes.
			fs.mkdirSync(dir, { recursive: true });
			fs.writeFileSync(path.join(dir, ".clusterplatform-prepared.json"), JSON.stringify({ goal: "x", seconds: 1 }));
			fs.rmSync(`${dir}.lock`);
			await expect(preparing).resolves.toBe(dir);
			expect(makeRuns()).toBe(0);
		} finally {
			other.kill("SIGKILL");
		}
	}, 20_000);

	it("takes over a preparation lock whose process is gone", async () => {
		const dir = await tree.preparedDir(TARGET.platform);
		fs.mkdirSync(path.dirname(dir), { recursive: true });
		const gone = spawnSync("true").pid;
		fs.writeFileSync(`${dir}.lock`, String(gone));
		await expect(tree.prepare(TARGET)).resolves.toBe(dir);
		expect(makeRuns()).toBe(2);
		expect(fs.existsSync(`${dir}.lock`)).toBe(false);
	}, 20_000);
});
