import fsp from "node:fs/promises";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import {
	DataTypes,
	builderManagerMixin,
	builderWorkerMixin,
	configOf,
	exec,
	invalid,
	permanentFailure,
	requireBinary,
	run,
	storeFor,
	textParam,
	type BuildContext,
	type BuilderSpec,
} from "@clusterplatform/core";
import { VOLUME_LABEL_PARAM } from "@clusterplatform/grub";
import { EFI_ARCHES, ISO_PARTS, PART_FIELDS, PART_NAMES, PART_PARAMS, checkEfiBinary, fetchPart, partsAreImmutable, validateParts, type IsoPart, type PartInputs } from "./parts";

export { EFI_ARCHES, ISO_PARTS, PART_NAMES, peMachine, type EfiArch, type IsoPart, type IsoPartName, type PartInputs } from "./parts";

/** What a client sends for an ISO: its label, an optional iPXE script, and each part by URL or id. */
export type IsoInputs = PartInputs & { label: string; script?: string | null };
export { isPublicAddress, urlProblem } from "./fetch-part";

const MAX_SCRIPT_BYTES = 64 * 1024;

/**
 * The BIOS path: isolinux starts iPXE as a Linux kernel. Debian's prebuilt ipxe.lkrn carries no
 * script, so a `script` given with the ISO rides along as its initrd, which iPXE runs.
 */
export function isolinuxConfig(withScript: boolean): string {
	return [
		"DEFAULT ipxe",
		"PROMPT 0",
		"TIMEOUT 0",
		"LABEL ipxe",
		"  LINUX /ipxe.lkrn",
		...(withScript ? ["  INITRD /script.ipxe"] : []),
		"",
	].join("\n");
}

/**
 * GRUB finds the ISO by the label baked into its image: an ISO with another label would never boot
 * on UEFI. Checked when the GRUB image is one of ours (by id, or by a store URL of a grubs row).
 */
async function checkGrubLabel(inputs: IsoInputs, ctx: Context): Promise<void> {
	const key = inputs.grubImgUrl !== undefined && inputs.grubImgUrl !== null ? storeFor(configOf(ctx.broker)).keyOfUrl(inputs.grubImgUrl) : null;
	const id: number | undefined = inputs.grubImgId ?? (key ? Number(/^grubs\/(\d+)\/grub\.img$/.exec(key)?.[1]) || undefined : undefined);
	if (id === undefined) return;
	const grub = await ctx
		.call<{ label: string }, { id: number }>("grubs.get", { id }, { meta: { accept: "application/json" } })
		// A store URL of a deleted row (its artifact kept for a row sharing it), or no grubs service here: nothing to compare.
		.catch((err) => (inputs.grubImgId === undefined ? null : Promise.reject(err)));
	if (grub && grub.label !== inputs.label) invalid("label", `must equal the label of grubs ${id} ("${grub.label}"), which GRUB searches for`);
}

export const ISOS: BuilderSpec<IsoInputs> = {
	name: "isos",
	fields: {
		label: { type: DataTypes.STRING(32), allowNull: false },
		...PART_FIELDS,
		script: { type: DataTypes.TEXT, allowNull: true },
	},
	params: {
		label: VOLUME_LABEL_PARAM,
		...PART_PARAMS,
		script: textParam(MAX_SCRIPT_BYTES, { optional: true }),
	},
	async validate(inputs, ctx?: Context) {
		if (inputs.script !== undefined && inputs.script !== null && !/^#!ipxe\s/.test(inputs.script)) invalid("script", "must be an iPXE script starting with #!ipxe");
		if (ctx) await validateParts(inputs, ctx, configOf(ctx.broker));
		if (ctx) await checkGrubLabel(inputs, ctx);
	},
	cacheable: partsAreImmutable,
	artifactName: () => "dist.iso",
};

/** Unpack a grub.zip into the tree, refusing any entry outside EFI/BOOT/ (no zip-slip). */
async function unpackEfiTree(ctx: BuildContext<IsoInputs>, field: string, zip: string, tree: string): Promise<void> {
	const unzip = requireBinary("unzip", "unzip");
	const { stdout } = await run(unzip, ["-Z1", zip], { signal: ctx.signal, timeout: 60_000 });
	for (const entry of stdout.split("\n").filter(Boolean)) {
		if (!/^EFI\/(BOOT\/([A-Za-z0-9][A-Za-z0-9._-]*)?)?$/i.test(entry)) permanentFailure(`${field}: the zip holds "${entry}", outside EFI/BOOT/`);
	}
	await run(unzip, ["-o", "-q", zip, "-d", tree], { signal: ctx.signal, timeout: 60_000 });
	await refuseLinks(field, tree, path.join(tree, "EFI"));
}

/**
 * Only directories and regular files may come out of a zip: unzip recreates symlinks, and a later
 * write to that name (a part fetched to EFI/BOOT/…) or xorriso reading it would follow one anywhere.
 */
async function refuseLinks(field: string, tree: string, dir: string): Promise<void> {
	for (const entry of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
		const full = path.join(dir, entry.name);
		if (entry.isDirectory()) await refuseLinks(field, tree, full);
		else if (!entry.isFile()) permanentFailure(`${field}: the zip holds "${path.relative(tree, full)}", which is not a regular file (links are refused)`);
	}
}

/** The loaders a UEFI firmware looks for on removable media, in the El Torito image's EFI/BOOT/. */
const EFI_LOADERS = Object.values(EFI_ARCHES).map((arch) => arch.loader);

/** The El Torito UEFI image's path in the ISO tree: GRUB's image as given, or one with iPXE loaders added. */
export const GRUB_IMAGE = "boot/grub.img";
export const EFI_IMAGE = "boot/efiboot.img";

/**
 * With ipxeIa32/ipxeArm64: a new El Torito image holding GRUB's loaders from grub.img (only the
 * EFI/BOOT/BOOT*.EFI files, copied out by name) and iPXE as BOOTIA32.EFI/BOOTAA64.EFI, which
 * replace GRUB's ia32 loader (its grub.cfg would chainload the x64 /ipxe.efi). FAT by mkfs.vfat,
 * filled by mtools, as the grubs builder makes grub.img.
 */
async function efiBootImage(ctx: BuildContext<IsoInputs>, grubImg: string, ipxeLoaders: Map<string, string>, output: string): Promise<void> {
	const options = { signal: ctx.signal, timeout: 60_000, env: { MTOOLS_SKIP_CHECK: "1" } };
	const field = ctx.inputs.grubImgId != null ? "grubImgId" : "grubImgUrl";
	const listing = await exec(requireBinary("mdir", "mtools"), ["-i", grubImg, "-b", "::/EFI/BOOT"], options);
	ctx.signal.throwIfAborted();
	if (listing.code !== 0) permanentFailure(`${field}: not a FAT image with an EFI/BOOT folder (${(listing.stderr || listing.stdout).trim().split("\n")[0]})`);
	const inGrub = new Set(listing.stdout.split("\n").map((line) => path.posix.basename(line.trim()).toUpperCase()));
	const fromGrub = path.join(ctx.workDir, "from-grub-img");
	await fsp.mkdir(fromGrub);
	const loaders: [string, string][] = [];
	for (const loader of EFI_LOADERS) {
		const file = ipxeLoaders.get(loader);
		if (file) {
			loaders.push([loader, file]);
		} else if (inGrub.has(loader)) {
			const copy = path.join(fromGrub, loader);
			await run(requireBinary("mcopy", "mtools"), ["-n", "-i", grubImg, `::/EFI/BOOT/${loader}`, copy], options);
			loaders.push([loader, copy]);
		}
	}
	let bytes = 0;
	for (const [, file] of loaders) bytes += (await fsp.stat(file)).size;
	const kib = Math.max(1440, Math.ceil((bytes * 1.1) / 1024) + 256);
	await run(requireBinary("mkfs.vfat", "dosfstools"), ["-C", "-n", "EFIBOOT", "-i", "43505050", output, String(kib)], options);
	await run(requireBinary("mmd", "mtools"), ["-i", output, "::/EFI", "::/EFI/BOOT"], options);
	for (const [loader, file] of loaders) await run(requireBinary("mcopy", "mtools"), ["-i", output, file, `::/EFI/BOOT/${loader}`], options);
}

/** Before an iPXE loader is written: drop a grub.zip's file of the same name in another case (FAT and ISO9660 would see two). */
async function removeCaseVariants(file: string): Promise<void> {
	const name = path.basename(file);
	for (const entry of await fsp.readdir(path.dirname(file))) {
		if (entry !== name && entry.toUpperCase() === name.toUpperCase()) await fsp.rm(path.join(path.dirname(file), entry), { recursive: true, force: true });
	}
}

/**
 * Assemble the tree from the parts and let xorriso write a hybrid ISO: El Torito BIOS (isolinux →
 * ipxe.lkrn), El Torito UEFI (grub.img → GRUB → /ipxe.efi; with ipxeIa32/ipxeArm64 an image that
 * also holds them as BOOTIA32.EFI/BOOTAA64.EFI), and an MBR + GPT so the same file boots as a raw
 * disk (USB stick). No Joliet: its volume id holds 16 characters, and GRUB would then search a
 * truncated label.
 */
export async function buildIso(ctx: BuildContext<IsoInputs>) {
	const tree = path.join(ctx.workDir, "tree");
	await fsp.mkdir(path.join(tree, "isolinux"), { recursive: true });
	await fsp.mkdir(path.join(tree, "boot"), { recursive: true });
	const env = { store: ctx.store, broker: ctx.broker, signal: ctx.signal };
	const mbr = path.join(ctx.workDir, "isohdpfx.bin");
	const ipxeLoaders = new Map<string, string>();
	let done = 0;
	for (const name of PART_NAMES) {
		const part: IsoPart = ISO_PARTS[name];
		const file = part.target ? path.join(tree, part.target) : name === "isohdpfxBin" ? mbr : path.join(ctx.workDir, `${name}.zip`);
		await fsp.mkdir(path.dirname(file), { recursive: true });
		if (part.efiArch && part.target && (ctx.inputs[`${name}Id`] != null || ctx.inputs[`${name}Url`] != null)) await removeCaseVariants(file);
		// Written afresh, never through whatever an earlier part left under that name.
		await fsp.rm(file, { force: true });
		const fetched = await fetchPart(name, ctx.inputs, file, env);
		if (fetched && !part.target && name !== "isohdpfxBin") await unpackEfiTree(ctx, ctx.inputs[`${name}Id`] != null ? `${name}Id` : `${name}Url`, file, tree);
		if (fetched && part.efiArch) await checkEfiBinary(name, ctx.inputs, file);
		if (fetched && part.efiArch && part.efiArch !== "x64") ipxeLoaders.set(EFI_ARCHES[part.efiArch].loader, file);
		await ctx.progress((++done / PART_NAMES.length) * 70);
	}
	let efiImage = GRUB_IMAGE;
	if (ipxeLoaders.size) {
		efiImage = EFI_IMAGE;
		await efiBootImage(ctx, path.join(tree, GRUB_IMAGE), ipxeLoaders, path.join(tree, EFI_IMAGE));
		await fsp.rm(path.join(tree, GRUB_IMAGE));
	}
	await fsp.writeFile(path.join(tree, "isolinux", "isolinux.cfg"), isolinuxConfig(Boolean(ctx.inputs.script)));
	if (ctx.inputs.script) await fsp.writeFile(path.join(tree, "script.ipxe"), ctx.inputs.script);
	const iso = path.join(ctx.workDir, "dist.iso");
	await run(requireBinary("xorriso", "xorriso"), xorrisoArgs(ctx.inputs.label, mbr, tree, iso, efiImage), { signal: ctx.signal, timeout: 300_000 });
	await ctx.progress(95);
	return { file: iso };
}

/** The xorriso (mkisofs emulation) arguments for a hybrid BIOS+UEFI ISO; the label is allow-listed. */
export function xorrisoArgs(label: string, mbr: string, tree: string, output: string, efiImage = GRUB_IMAGE): string[] {
	return [
		"-as", "mkisofs",
		"-quiet",
		"-o", output,
		"-isohybrid-mbr", mbr,
		"-c", "isolinux/boot.cat",
		"-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-eltorito-alt-boot",
		"-e", efiImage, "-no-emul-boot", "-isohybrid-gpt-basdat",
		"-V", label,
		"-R",
		tree,
	];
}

/** /api/isos: hybrid BIOS+UEFI ISOs that start iPXE from CD or USB (queue). */
export const IsosService: ServiceSchema = {
	name: "isos",
	mixins: [builderManagerMixin(ISOS)],
};

/** Assembles isos jobs with xorriso from parts in the store or at public URLs. */
export const IsosWorkerService: ServiceSchema = {
	name: "isos-worker",
	mixins: [builderWorkerMixin({ ...ISOS, build: buildIso })],
};

export default IsosService;
