import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError, loadConfig } from "@clusterplatform/core";
import { IpxeSourceTree, buildablePlatforms, ipxeWorkerSettings, locateIpxeSource, sourceFingerprint } from "../src";

describe("ipxes-worker settings", () => {
	const nowhere = { sourceDir: "/nonexistent/ipxe", treesDir: "/nonexistent/ipxe-trees" };

	it("without a source tree installed or named: Debian's prebuilt mode with make -j<cores>", () => {
		expect(ipxeWorkerSettings(loadConfig({}), nowhere)).toEqual({ sourceDir: null, treesDir: null, preparePlatforms: [], makeJobs: os.availableParallelism() });
	});

	it("the tree setup installed is the default, with its prepared trees and every buildable platform", () => {
		const root = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-installed-ipxe-"));
		try {
			const installed = { sourceDir: path.join(root, "ipxe"), treesDir: path.join(root, "ipxe-trees") };
			fs.mkdirSync(path.join(installed.sourceDir, "src"), { recursive: true });
			fs.writeFileSync(path.join(installed.sourceDir, "src", "Makefile"), "");
			expect(ipxeWorkerSettings(loadConfig({}), installed)).toEqual({ sourceDir: installed.sourceDir, treesDir: installed.treesDir, preparePlatforms: buildablePlatforms(), makeJobs: os.availableParallelism() });
			// "none" is the operator's way back to Debian's binaries; another tree keeps its trees in the data dir.
			expect(ipxeWorkerSettings(loadConfig({ IPXE_SOURCE_DIR: "none" }), installed)).toMatchObject({ sourceDir: null, treesDir: null, preparePlatforms: [] });
			expect(ipxeWorkerSettings(loadConfig({ IPXE_SOURCE_DIR: "/src/ipxe", IPXE_PREPARE_PLATFORMS: "" }), installed)).toMatchObject({ sourceDir: "/src/ipxe", treesDir: null, preparePlatforms: [] });
		} finally {
			fs.rmSync(root, { recursive: true, force: true });
		}
	});

	it("reads IPXE_SOURCE_DIR, IPXE_TREES_DIR, IPXE_PREPARE_PLATFORMS and IPXE_MAKE_JOBS", () => {
		expect(
			ipxeWorkerSettings(loadConfig({ IPXE_SOURCE_DIR: "/src/ipxe", IPXE_TREES_DIR: "/var/cache/trees", IPXE_PREPARE_PLATFORMS: "bin-x86_64-pcbios, bin-x86_64-efi", IPXE_MAKE_JOBS: "3" }), nowhere),
		).toEqual({
			sourceDir: "/src/ipxe",
			treesDir: "/var/cache/trees",
			preparePlatforms: ["bin-x86_64-pcbios", "bin-x86_64-efi"],
			makeJobs: 3,
		});
	});

	it.each([
		[{ IPXE_SOURCE_DIR: "/src/ipxe", IPXE_PREPARE_PLATFORMS: "bin-x86_64-efi;reboot" }, /IPXE_PREPARE_PLATFORMS/],
		[{ IPXE_PREPARE_PLATFORMS: "bin-x86_64-efi" }, /needs IPXE_SOURCE_DIR/],
		[{ IPXE_MAKE_JOBS: "0" }, /IPXE_MAKE_JOBS/],
		[{ IPXE_MAKE_JOBS: "2; rm -rf /" }, /IPXE_MAKE_JOBS/],
	])("refuses %j naming the variable", (env, message) => {
		expect(() => ipxeWorkerSettings(loadConfig(env), nowhere)).toThrow(ConfigError);
		expect(() => ipxeWorkerSettings(loadConfig(env), nowhere)).toThrow(message);
	});

	it("IPXE_SOURCE_DIR must be an iPXE checkout (root or its src/)", () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-not-ipxe-"));
		try {
			expect(() => locateIpxeSource(dir)).toThrow(/not an iPXE source tree/);
			expect(() => new IpxeSourceTree(dir, path.join(dir, "trees"))).toThrow(ConfigError);
			fs.mkdirSync(path.join(dir, "src", "include", "ipxe"), { recursive: true });
			fs.writeFileSync(path.join(dir, "src", "Makefile"), "");
			expect(locateIpxeSource(dir)).toBe(path.join(dir, "src"));
			expect(locateIpxeSource(path.join(dir, "src"))).toBe(path.join(dir, "src"));
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});

	it("the source fingerprint changes with the sources, not with build output in bin*/", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-fingerprint-"));
		try {
			fs.mkdirSync(path.join(dir, "core"));
			fs.writeFileSync(path.join(dir, "core", "main.c"), "int main;");
			const before = await sourceFingerprint(dir);
			fs.mkdirSync(path.join(dir, "bin-x86_64-efi"));
			fs.writeFileSync(path.join(dir, "bin-x86_64-efi", "main.o"), "object");
			expect(await sourceFingerprint(dir)).toBe(before);
			fs.writeFileSync(path.join(dir, "core", "main.c"), "int main(void);");
			expect(await sourceFingerprint(dir)).not.toBe(before);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});
});
