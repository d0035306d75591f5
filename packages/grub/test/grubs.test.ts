import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";

const LABEL = "Cluster Platform Provisioner ISO";

describe("grubs", () => {
	let provisioner: TestProvisioner;
	let scratch: string;
	beforeAll(async () => {
		scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-grubs-test-"));
		provisioner = await startTestProvisioner({ services: ["gateway", "grubs", "grubs-worker"] });
	});
	afterAll(async () => {
		await provisioner?.stop();
		fs.rmSync(scratch, { recursive: true, force: true });
	});

	async function build(body: Record<string, unknown>): Promise<{ row: any; file: string }> {
		const response = await provisioner.api("/grubs", { method: "POST", json: body });
		expect(response.status).toBe(201);
		const created = await response.json();
		const row = await eventually(async () => {
			const current = await (await provisioner.api(`/grubs/${created.id}`)).json();
			return ["done", "failed"].includes(current.status) ? current : undefined;
		}, 60_000, `grubs ${created.id} finished`);
		expect(row).toMatchObject({ status: "done", progress: 100, error: null });
		const file = path.join(scratch, `${row.id}-${path.basename(row.url)}`);
		fs.writeFileSync(file, Buffer.from(await (await fetch(row.url)).arrayBuffer()));
		return { row, file };
	}

	const fileType = (file: string) => execFileSync("file", ["-b", file]).toString();

	it("fragment img: a FAT El Torito image with a 64-bit BOOTX64.EFI and a 32-bit BOOTIA32.EFI, each embedding the label search", async () => {
		const { row, file } = await build({ label: LABEL, platform: "x86_64-efi", architecture: "x64", extension: "efi", fragment: "img" });
		expect(row.url).toMatch(/\/grubs\/\d+\/grub\.img$/);
		expect(fileType(file)).toMatch(/FAT/);
		const listing = execFileSync("mdir", ["-i", file, "-b", "::/EFI/BOOT"], { env: { ...process.env, MTOOLS_SKIP_CHECK: "1" } }).toString();
		expect(listing).toMatch(/BOOTX64\.EFI/);
		expect(listing).toMatch(/BOOTIA32\.EFI/);
		for (const [name, machine] of [["BOOTX64.EFI", /PE32\+ executable \(EFI application\) x86-64/], ["BOOTIA32.EFI", /PE32 executable \(EFI application\) Intel 80386/]] as const) {
			const loader = path.join(scratch, `${row.id}-${name}`);
			execFileSync("mcopy", ["-i", file, `::/EFI/BOOT/${name}`, loader], { env: { ...process.env, MTOOLS_SKIP_CHECK: "1" } });
			expect(fileType(loader)).toMatch(machine);
			// grub.cfg sits uncompressed in the loader's memdisk.
			const text = fs.readFileSync(loader).toString("latin1");
			expect(text).toContain(`search --no-floppy --set=root --label "${LABEL}"`);
			expect(text).toContain("chainloader ($root)/ipxe.efi");
		}
	});

	it.each([
		["x64", "BOOTX64.EFI", /PE32\+ executable \(EFI application\) x86-64/],
		["x86", "BOOTIA32.EFI", /PE32 executable \(EFI application\) Intel 80386/],
	])("fragment efi, architecture %s: grub.zip holding EFI/BOOT/%s of the right machine type", async (architecture, loader, machine) => {
		const { row, file } = await build({ label: LABEL, platform: "x86_64-efi", architecture, extension: "efi", fragment: "efi" });
		expect(row.url).toMatch(/\/grubs\/\d+\/grub\.zip$/);
		const entries = execFileSync("unzip", ["-Z1", file]).toString().split("\n").filter(Boolean);
		expect(entries).toContain(`EFI/BOOT/${loader}`);
		const out = path.join(scratch, `${row.id}-tree`);
		execFileSync("unzip", ["-q", file, "-d", out]);
		expect(fileType(path.join(out, "EFI", "BOOT", loader))).toMatch(machine);
	});

	const valid = { label: "PROVISIONER", platform: "x86_64-efi", architecture: "x64", extension: "efi", fragment: "img" };
	it.each([
		[{ ...valid, label: 'A" ; reboot ; echo "' }, "label"],
		[{ ...valid, label: "$(reboot)" }, "label"],
		[{ ...valid, label: "a`id`" }, "label"],
		[{ ...valid, label: "x\nchainloader /evil.efi" }, "label"],
		[{ ...valid, label: "a{b}" }, "label"],
		[{ ...valid, label: "${root}" }, "label"],
		[{ ...valid, label: "../../etc" }, "label"],
		[{ ...valid, label: "x".repeat(33) }, "label"],
		[{ ...valid, label: "LABEL\u0000" }, "label"],
		[{ ...valid, label: "" }, "label"],
		[{ ...valid, label: 42 }, "label"],
		[{ ...valid, platform: "x86_64-efi; rm -rf /" }, "platform"],
		[{ ...valid, platform: "i386-efi" }, "platform"],
		[{ ...valid, architecture: "arm64" }, "architecture"],
		[{ ...valid, architecture: ["x64"] }, "architecture"],
		[{ ...valid, extension: "../efi" }, "extension"],
		[{ ...valid, fragment: "../../etc/passwd" }, "fragment"],
		[{ ...valid, fragment: null }, "fragment"],
		[{ ...valid, output: "/etc/passwd" }, "output"],
	])("refuses %j with a 422 naming %s, and writes no row", async (body, field) => {
		const before = (await (await provisioner.api("/grubs")).json()).total;
		const response = await provisioner.api("/grubs", { method: "POST", json: body });
		expect(response.status).toBe(422);
		expect(JSON.stringify((await response.json()).data)).toContain(field);
		expect((await (await provisioner.api("/grubs")).json()).total).toBe(before);
	});
});
