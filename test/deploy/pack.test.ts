import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freshPostgresDatabase } from "../support/provisioner";

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, "..", "..");
const NPM = "npm";

/**
 * The packages as users get them: `npm pack` tarballs (of the build `npm test` runs first),
 * installed into a scratch project outside the monorepo, one service used as a mixin — as the
 * seed says: `npm install @clusterplatform/<service>` and import it as a mixin.
 * Real npm, real install (third-party dependencies from the registry or npm's cache).
 */
describe("npm packages", () => {
	const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-pack-"));
	afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

	it("every package declares the packages its sources import (an image or a tarball has nothing else)", () => {
		const builtins = new Set(require("node:module").builtinModules as string[]);
		const problems: string[] = [];
		for (const dir of fs.readdirSync(path.join(ROOT, "packages"))) {
			const manifestFile = path.join(ROOT, "packages", dir, "package.json");
			if (!fs.existsSync(manifestFile)) continue;
			const manifest = JSON.parse(fs.readFileSync(manifestFile, "utf8"));
			const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]);
			const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : /\.ts$/.test(e.name) ? [path.join(d, e.name)] : []));
			for (const file of walk(path.join(ROOT, "packages", dir, "src"))) {
				const text = fs.readFileSync(file, "utf8");
				for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s+(?!type\b)[^;]*?from\s+"([^"]+)"|\brequire\(\s*"([^"]+)"\s*\)|\bimport\(\s*"([^"]+)"\s*\)/g)) {
					const specifier = m[1] ?? m[2] ?? m[3]!;
					if (specifier.startsWith(".") || specifier.startsWith("node:") || builtins.has(specifier)) continue;
					const name = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!;
					if (!declared.has(name)) problems.push(`${manifest.name}: ${path.relative(ROOT, file)} imports ${name}`);
				}
			}
		}
		expect([...new Set(problems)]).toEqual([]);
	});

	it("every workspace package packs its built dist, with no sources or tests", async () => {
		const { stdout } = await run(NPM, ["pack", "--dry-run", "--json", "--workspaces", "--no-audit", "--no-fund"], { cwd: ROOT, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
		// The test kit (test/support) is a private workspace: never published.
		const packs = (JSON.parse(stdout) as { name: string; files: { path: string }[] }[]).filter((pack) => pack.name !== "@clusterplatform/test-kit");
		const workspaces = fs.readdirSync(path.join(ROOT, "packages")).filter((dir) => fs.existsSync(path.join(ROOT, "packages", dir, "package.json")));
		expect(packs.map((p) => p.name).sort()).toEqual(workspaces.map((dir) => JSON.parse(fs.readFileSync(path.join(ROOT, "packages", dir, "package.json"), "utf8")).name).sort());
		for (const pack of packs) {
			const files = pack.files.map((f) => f.path);
			expect({ name: pack.name, index: files.includes("dist/index.js"), types: files.includes("dist/index.d.ts") }).toEqual({ name: pack.name, index: true, types: true });
			expect(files.filter((f) => /^(src|test)\//.test(f) || f.endsWith(".tsbuildinfo"))).toEqual([]);
		}
	}, 150_000);

	it("core + mainscripts tarballs install in a scratch project, and MainscriptsService works as a mixin", async () => {
		const { stdout: packed } = await run(NPM, ["pack", "--json", "--pack-destination", scratch, "-w", "packages/core", "-w", "packages/mainscripts"], { cwd: ROOT, timeout: 120_000 });
		const tarballs = Object.fromEntries((JSON.parse(packed) as { name: string; filename: string }[]).map((p) => [p.name, `file:${path.join(scratch, p.filename.replace(/^@/, "").replace("/", "-"))}`]));
		for (const spec of Object.values(tarballs)) expect(fs.existsSync(spec.slice("file:".length))).toBe(true);
		fs.writeFileSync(
			path.join(scratch, "package.json"),
			JSON.stringify({
				name: "mixin-user",
				private: true,
				dependencies: tarballs,
				// mainscripts asks for @clusterplatform/core 0.1.0: the tarball, not the registry.
				overrides: { "@clusterplatform/core": tarballs["@clusterplatform/core"] },
			}),
		);
		// Native builds are skipped (no sqlite3 compile): the script uses PostgreSQL.
		await run(NPM, ["install", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: scratch, timeout: 300_000 });
		expect(fs.existsSync(path.join(scratch, "node_modules", "@clusterplatform", "mainscripts", "dist", "index.js"))).toBe(true);
		expect(fs.lstatSync(path.join(scratch, "node_modules", "@clusterplatform", "core")).isSymbolicLink()).toBe(false);

		fs.writeFileSync(
			path.join(scratch, "menus.js"),
			`
const { createBroker, loadConfig } = require("@clusterplatform/core");
const { MainscriptsService } = require("@clusterplatform/mainscripts");

async function main() {
	const broker = createBroker(loadConfig({ DATA_DIR: process.argv[2], DATABASE_URL: process.argv[3], LOG_LEVEL: "warn", NODE_ID: "mixin-user" }));
	// A service of our own, built on the published one.
	broker.createService({
		name: "menus",
		mixins: [MainscriptsService],
		actions: { shout: { params: { id: "number|convert" }, async handler(ctx) { return (await ctx.call("menus.get", { id: ctx.params.id })).toUpperCase(); } } },
	});
	await broker.start();
	const row = await broker.call("menus.create", { text: "#!ipxe\\necho from a mixin" });
	const raw = await broker.call("menus.get", { id: row.id });
	const json = await broker.call("menus.get", { id: row.id }, { meta: { accept: "application/json" } });
	const shout = await broker.call("menus.shout", { id: row.id });
	let refused = null;
	await broker.call("menus.create", { text: "x", nope: 1 }).catch((err) => (refused = { code: err.code, data: err.data }));
	console.log(JSON.stringify({ row, raw, json, shout, refused }));
	await broker.stop();
}
main().catch((err) => { console.error(err); process.exit(1); });
`,
		);
		const dataDir = path.join(scratch, "data");
		fs.mkdirSync(dataDir);
		const { stdout } = await run(process.execPath, ["menus.js", dataDir, await freshPostgresDatabase()], { cwd: scratch, timeout: 60_000 });
		const result = JSON.parse(stdout.trim().split("\n").pop()!);
		expect(result.row).toMatchObject({ id: expect.any(Number), text: "#!ipxe\necho from a mixin" });
		expect(result.raw).toBe("#!ipxe\necho from a mixin");
		expect(result.json).toMatchObject({ id: result.row.id, text: "#!ipxe\necho from a mixin" });
		expect(result.shout).toBe("#!IPXE\nECHO FROM A MIXIN");
		expect(result.refused).toEqual({ code: 422, data: [expect.objectContaining({ field: "nope" })] });
	}, 420_000);
});
