import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError } from "@clusterplatform/core";
import { IpxeSourceTree, ipxeWorkerSettings, locateIpxeSource, sourceFingerprint } from "../src";

describe("ipxes-worker settings", () => {
	it("defaults to Debian's prebuilt mode with make -j<cores>", () => {
		expect(ipxeWorkerSettings({})).toEqual({ sourceDir: null, preparePlatforms: [], makeJobs: os.availableParallelism() });
	});

	it("reads IPXE_SOURCE_DIR, IPXE_PREPARE_PLATFORMS and IPXE_MAKE_JOBS", () => {
		expect(ipxeWorkerSettings({ IPXE_SOURCE_DIR: "/src/ipxe", IPXE_PREPARE_PLATFORMS: "bin-x86_64-pcbios, bin-x86_64-efi", IPXE_MAKE_JOBS: "3" })).toEqual({
			sourceDir: "/src/ipxe",
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
		expect(() => ipxeWorkerSettings(env)).toThrow(ConfigError);
		expect(() => ipxeWorkerSettings(env)).toThrow(message);
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
