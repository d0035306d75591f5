/**
 * iPXE builds, per platform: the first build after setup through the API (POST → done, on the
 * trees setup prepared), a changed script rebuilt on a prepared object tree, and an identical
 * request answered from the content-addressed cache — each against the cold build of the same
 * target measured in the same run (a fresh preparation in a temp dir).
 *
 *   npm run bench:ipxe                 (the source setup installed, or IPXE_SOURCE_DIR)
 *   BENCH_PLATFORMS=bin-x86_64-efi npm run bench:ipxe
 *
 * Without an iPXE source tree it says so and exits 0. Targets: first build after setup <= 5 s,
 * changed-script rebuild <= 5 s, identical inputs < 100 ms.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "@clusterplatform/core";
import { startProvisioner } from "@clusterplatform/cli";
import { buildablePlatforms, defaultTarget, ipxeWorkerSettings, sourceTreeFor, type Platform } from "@clusterplatform/ipxe";
import { freePort } from "../test/support/ports.ts";

const REBUILDS = Number(process.env.BENCH_RUNS ?? 5);
const TARGET_SECONDS = 5;
const CACHE_TARGET_SECONDS = 0.1;

const installed = ipxeWorkerSettings(loadConfig());
if (!installed.sourceDir) {
	console.log("bench/ipxe: no iPXE source tree (run scripts/setup with network access or IPXE_SOURCE_TARBALL, or set IPXE_SOURCE_DIR) — nothing to measure. Exiting 0.");
	process.exit(0);
}
const PLATFORMS = (process.env.BENCH_PLATFORMS?.split(",").filter(Boolean) ?? buildablePlatforms()).map((platform) => defaultTarget(platform as Platform));

const seconds = (ms: number) => ms / 1000;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const fmt = (s: number) => `${s.toFixed(2)} s`;


const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bench-ipxe-"));
const results: Record<string, unknown>[] = [];
try {
	const port = await freePort();
	const config = loadConfig({ DATA_DIR: dataDir, PORT: String(port), HOST: "127.0.0.1", PUBLIC_URL: `http://127.0.0.1:${port}`, LOG_LEVEL: "warn", AUTH: "off" }); // loopback, throwaway data dir: no tokens
	const settings = { ...installed, sourceDir: installed.sourceDir };
	console.log(`bench/ipxe: source ${settings.sourceDir}, make -j${settings.makeJobs}, ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(2)}`);

	// First, through the API on the trees setup prepared: what a user's first builds cost.
	const provisioner = await startProvisioner(config, ["gateway", "ipxes", "ipxes-worker"]);
	const firstBuilds: Record<string, { first: number; identical: number }> = {};
	try {
		const api = `http://127.0.0.1:${port}/api/ipxes`;
		const request = async (target: (typeof PLATFORMS)[number], script: string) => {
			const started = Date.now();
			const response = await fetch(api, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ script, ...target }) });
			if (response.status !== 201) throw new Error(`POST /api/ipxes: ${response.status} ${await response.text()}`);
			let row = await response.json();
			for (let i = 0; i < 30_000 && row.status !== "done" && row.status !== "failed"; i++) {
				await new Promise((r) => setTimeout(r, 20));
				row = await (await fetch(`${api}/${row.id}`)).json();
			}
			if (row.status !== "done") throw new Error(`build ${row.id} ended ${row.status}: ${row.error}`);
			return seconds(Date.now() - started);
		};
		for (const target of PLATFORMS) {
			const script = `#!ipxe\necho bench api ${target.platform} ${Date.now()}\n`;
			firstBuilds[target.platform] = { first: await request(target, script), identical: await request(target, script) };
		}
	} finally {
		await provisioner.stop();
	}

	// Then the trees part in a fresh trees dir, so the cold build is measured in this run.
	const tree = sourceTreeFor({ ...settings, treesDir: path.join(dataDir, "cold-trees") }, config);

	for (const target of PLATFORMS) {
		const prepareStarted = Date.now();
		await tree.prepare(target);
		const prepareSeconds = seconds(Date.now() - prepareStarted);
		const manifest = (await tree.manifest(target.platform))!;
		const cold = manifest.copySeconds + manifest.buildSeconds[0];
		const preparedDir = await tree.preparedDir(target.platform);
		const rebuildOnce = async (i: number) => {
			const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bench-ipxe-job-"));
			try {
				const started = Date.now();
				await tree.build(target, `#!ipxe\necho bench rebuild ${i} ${Date.now()}\n`, workDir);
				return seconds(Date.now() - started);
			} finally {
				fs.rmSync(workDir, { recursive: true, force: true });
			}
		};
		// Builds a little apart: the spare copy made after the previous build is waiting.
		const rebuilds: number[] = [];
		for (let i = 0; i < REBUILDS; i++) {
			await tree.idle();
			rebuilds.push(await rebuildOnce(i));
		}
		// A burst: no spare waiting, the build copies the prepared tree itself.
		await tree.idle();
		for (const name of fs.readdirSync(path.dirname(preparedDir))) {
			if (name.startsWith(`${path.basename(preparedDir)}.spare-`)) fs.rmSync(path.join(path.dirname(preparedDir), name), { recursive: true, force: true });
		}
		const withoutSpare = await rebuildOnce(REBUILDS);
		await tree.idle();
		const rebuild = median(rebuilds);
		const api = firstBuilds[target.platform]!;
		const row = {
			target: `${target.platform}/${target.driver}.${target.extension}`,
			firstBuildAfterSetupSeconds: api.first,
			identicalRequestSeconds: api.identical,
			firstBuildVsCold: api.first / cold,
			coldSeconds: cold,
			prepareSeconds,
			rebuildSeconds: rebuilds,
			rebuildMedianSeconds: rebuild,
			rebuildMinSeconds: Math.min(...rebuilds),
			loadAverage: os.loadavg()[0],
			rebuildWithoutSpareSeconds: withoutSpare,
			speedup: cold / rebuild,
			meetsTarget: rebuild <= TARGET_SECONDS && api.first <= TARGET_SECONDS && api.identical < CACHE_TARGET_SECONDS,
		};
		results.push(row);
		console.log(
			`${row.target}: first build after setup (API, POST → done) ${fmt(api.first)} (${(100 * row.firstBuildVsCold).toFixed(1)}% of cold); identical inputs ${(api.identical * 1000).toFixed(0)} ms; cold build ${fmt(cold)} (tree preparation ${fmt(prepareSeconds)} incl. a second build), ` +
				`changed-script rebuild median ${fmt(rebuild)} [${rebuilds.map(fmt).join(", ")}] → ${row.speedup.toFixed(1)}× faster ` +
				`(load average ${row.loadAverage.toFixed(2)} on ${os.cpus().length} CPUs) ` +
				`(${fmt(withoutSpare)} when no spare copy is waiting); ` +
				`targets (first and rebuild <= ${TARGET_SECONDS} s, identical < ${CACHE_TARGET_SECONDS * 1000} ms): ${row.meetsTarget ? "met" : "MISSED"}`,
		);
	}

	console.log(`bench/ipxe json: ${JSON.stringify(results)}`);
} finally {
	fs.rmSync(dataDir, { recursive: true, force: true });
}
