/**
 * `npm run bench:iso` (after `npm run build`): how fast the ISO builder answers, against
 * baselines measured in the same run on the same machine.
 *
 *  1. A fresh ISO from parts already in the store, POST → row done (queue, worker, store, xorriso),
 *     against the bare xorriso invocation on the same tree. Target: <= 1 s.
 *  2. A content-addressed cache hit (identical inputs), POST → 201 done, against the fresh build.
 *     Target: < 100 ms.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, storeFor } from "@clusterplatform/core";
import { startProvisioner } from "@clusterplatform/cli";
import { xorrisoArgs } from "@clusterplatform/iso";
import { freePort } from "../test/support/ports.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const LABEL = "CPP BENCH ISO";

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const ms = (value: number) => `${value.toFixed(1)} ms`;


const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bench-iso-"));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
// Loopback only, a throwaway data dir: no tokens needed.
const config = loadConfig({ PORT: String(port), HOST: "127.0.0.1", PUBLIC_URL: base, DATA_DIR: dataDir, LOG_LEVEL: "warn", AUTH: "off" });
const provisioner = await startProvisioner(config, ["gateway", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"]);

async function post(entity: string, body: unknown): Promise<any> {
	const response = await fetch(`${base}/api/${entity}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
	if (response.status !== 201) throw new Error(`POST /${entity}: ${response.status} ${await response.text()}`);
	return response.json();
}

async function done(entity: string, id: number): Promise<any> {
	const deadline = Date.now() + 60_000;
	for (;;) {
		const row = await (await fetch(`${base}/api/${entity}/${id}`)).json();
		if (row.status === "done") return row;
		if (row.status === "failed") throw new Error(`${entity} ${id} failed: ${row.error}`);
		if (Date.now() > deadline) throw new Error(`${entity} ${id} not done after 60 s`);
		await new Promise((r) => setTimeout(r, 5));
	}
}

try {
	const store = storeFor(config);
	const ipxeBios = await store.putFile("bench-parts/ipxe.lkrn", "/usr/lib/ipxe/ipxe.lkrn");
	const ipxeUefi = await store.putFile("bench-parts/ipxe.efi", "/usr/lib/ipxe/ipxe.efi");
	const parts = await Promise.all(
		[
			["grubs", { label: LABEL, architecture: "x64", fragment: "img" }],
			["syslinuxs", { fragment: "ldlinux.c32" }],
			["syslinuxs", { fragment: "isolinux.bin" }],
			["syslinuxs", { fragment: "isohdpfx.bin" }],
		].map(async ([entity, body]) => done(entity as string, (await post(entity as string, body)).id)),
	);
	const [grubImg, ldLinux, isolinuxBin, isohdpfxBin] = parts;
	const inputs = (run: number | string) => ({
		label: LABEL,
		ipxeBiosUrl: ipxeBios.url,
		ipxeUefiUrl: ipxeUefi.url,
		grubImgId: grubImg.id,
		ldLinuxId: ldLinux.id,
		isolinuxBinId: isolinuxBin.id,
		isohdpfxBinId: isohdpfxBin.id,
		// A different script per run defeats the cache: every run is a real build.
		script: `#!ipxe\ndhcp\nchain http://10.0.2.2/api/mainscripts/1\n# run ${run}\n`,
	});

	// 1. Fresh builds through the API (one warm-up first).
	await done("isos", (await post("isos", inputs("warm-up"))).id);
	const fresh: number[] = [];
	for (let run = 0; run < RUNS; run++) {
		const started = performance.now();
		await done("isos", (await post("isos", inputs(run))).id);
		fresh.push(performance.now() - started);
	}

	// Baseline: the bare xorriso run on the same tree.
	const tree = path.join(dataDir, "baseline-tree");
	fs.mkdirSync(path.join(tree, "isolinux"), { recursive: true });
	fs.mkdirSync(path.join(tree, "boot"), { recursive: true });
	for (const [key, target] of [[ipxeBios.key, "ipxe.lkrn"], [ipxeUefi.key, "ipxe.efi"], [grubImg.url, "boot/grub.img"], [ldLinux.url, "isolinux/ldlinux.c32"], [isolinuxBin.url, "isolinux/isolinux.bin"]]) {
		await store.download(store.keyOfUrl(key!) ?? key!, path.join(tree, target!));
	}
	fs.writeFileSync(path.join(tree, "isolinux", "isolinux.cfg"), "DEFAULT ipxe\nLABEL ipxe\n  LINUX /ipxe.lkrn\n  INITRD /script.ipxe\n");
	fs.writeFileSync(path.join(tree, "script.ipxe"), inputs(0).script);
	const mbr = path.join(dataDir, "isohdpfx.bin");
	await store.download(store.keyOfUrl(isohdpfxBin.url)!, mbr);
	const xorriso: number[] = [];
	for (let run = 0; run < RUNS; run++) {
		const started = performance.now();
		execFileSync("xorriso", xorrisoArgs(LABEL, mbr, tree, path.join(dataDir, `baseline-${run}.iso`)), { stdio: "ignore" });
		xorriso.push(performance.now() - started);
	}

	// 2. Cache hits: identical inputs to a done ISO.
	const cached: number[] = [];
	for (let run = 0; run < RUNS * 3; run++) {
		const started = performance.now();
		const row = await post("isos", inputs(0));
		cached.push(performance.now() - started);
		if (row.status !== "done") throw new Error(`expected a cache hit, got ${row.status}`);
	}

	const freshMs = median(fresh);
	const xorrisoMs = median(xorriso);
	const cachedMs = median(cached);
	console.log(`ISO bench (${RUNS} runs each, medians; ${os.cpus().length} CPUs)`);
	console.log(`  fresh ISO via API (POST → done):  ${ms(freshMs)}   target <= 1000 ms  ${freshMs <= 1000 ? "OK" : "MISSED"}`);
	console.log(`  bare xorriso on the same tree:    ${ms(xorrisoMs)}   API/xorriso = ${(freshMs / xorrisoMs).toFixed(2)}x`);
	console.log(`  cache hit via API (POST → done):  ${ms(cachedMs)}   target < 100 ms  ${cachedMs < 100 ? "OK" : "MISSED"}`);
	console.log(`  fresh / cache hit:                ${(freshMs / cachedMs).toFixed(1)}x faster when cached`);
} finally {
	await provisioner.stop();
	fs.rmSync(dataDir, { recursive: true, force: true });
}
process.exit(0);
