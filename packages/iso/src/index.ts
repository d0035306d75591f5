import fsp from "node:fs/promises";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import {
	DataTypes,
	builderManagerMixin,
	builderWorkerMixin,
	configOf,
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
import { ISO_PARTS, PART_FIELDS, PART_NAMES, PART_PARAMS, fetchPart, partsAreImmutable, validateParts } from "./parts";

export { ISO_PARTS, PART_NAMES, type IsoPart, type IsoPartName } from "./parts";
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
async function checkGrubLabel(inputs: Record<string, any>, ctx: Context): Promise<void> {
	const key = inputs.grubImgUrl !== undefined ? storeFor(configOf(ctx.broker)).keyOfUrl(inputs.grubImgUrl) : null;
	const id: number | undefined = inputs.grubImgId ?? (key ? Number(/^grubs\/(\d+)\/grub\.img$/.exec(key)?.[1]) || undefined : undefined);
	if (id === undefined) return;
	const grub = await ctx
		.call<{ label: string }, { id: number }>("grubs.get", { id }, { meta: { accept: "application/json" } })
		// A store URL of a deleted row (its artifact kept for a row sharing it), or no grubs service here: nothing to compare.
		.catch((err) => (inputs.grubImgId === undefined ? null : Promise.reject(err)));
	if (grub && grub.label !== inputs.label) invalid("label", `must equal the label of grubs ${id} ("${grub.label}"), which GRUB searches for`);
}

export const ISOS: BuilderSpec = {
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
		if (inputs.script !== undefined && !/^#!ipxe\s/.test(inputs.script)) invalid("script", "must be an iPXE script starting with #!ipxe");
		if (ctx) await validateParts(inputs, ctx, configOf(ctx.broker));
		if (ctx) await checkGrubLabel(inputs, ctx);
	},
	cacheable: partsAreImmutable,
	artifactName: () => "dist.iso",
};

/** Unpack a grub.zip into the tree, refusing any entry outside EFI/BOOT/ (no zip-slip). */
async function unpackEfiTree(ctx: BuildContext, field: string, zip: string, tree: string): Promise<void> {
	const unzip = requireBinary("unzip", "unzip");
	const { stdout } = await run(unzip, ["-Z1", zip], { signal: ctx.signal, timeout: 60_000 });
	for (const entry of stdout.split("\n").filter(Boolean)) {
		if (!/^EFI\/(BOOT\/([A-Za-z0-9][A-Za-z0-9._-]*)?)?$/i.test(entry)) permanentFailure(`${field}: the zip holds "${entry}", outside EFI/BOOT/`);
	}
	await run(unzip, ["-o", "-q", zip, "-d", tree], { signal: ctx.signal, timeout: 60_000 });
}

/**
 * Assemble the tree from the parts and let xorriso write a hybrid ISO: El Torito BIOS (isolinux →
 * ipxe.lkrn), El Torito UEFI (grub.img → GRUB → /ipxe.efi), and an MBR + GPT so the same file boots
 * as a raw disk (USB stick). No Joliet: its volume id holds 16 characters, and GRUB would then
 * search a truncated label.
 */
export async function buildIso(ctx: BuildContext) {
	const tree = path.join(ctx.workDir, "tree");
	await fsp.mkdir(path.join(tree, "isolinux"), { recursive: true });
	await fsp.mkdir(path.join(tree, "boot"), { recursive: true });
	const env = { store: ctx.store, broker: ctx.broker, signal: ctx.signal };
	const mbr = path.join(ctx.workDir, "isohdpfx.bin");
	let done = 0;
	for (const name of PART_NAMES) {
		const part = ISO_PARTS[name];
		const file = part.target ? path.join(tree, part.target) : name === "isohdpfxBin" ? mbr : path.join(ctx.workDir, `${name}.zip`);
		const fetched = await fetchPart(name, ctx.inputs, file, env);
		if (fetched && !part.target && name !== "isohdpfxBin") await unpackEfiTree(ctx, ctx.inputs[`${name}Id`] != null ? `${name}Id` : `${name}Url`, file, tree);
		await ctx.progress((++done / PART_NAMES.length) * 70);
	}
	await fsp.writeFile(path.join(tree, "isolinux", "isolinux.cfg"), isolinuxConfig(Boolean(ctx.inputs.script)));
	if (ctx.inputs.script) await fsp.writeFile(path.join(tree, "script.ipxe"), ctx.inputs.script);
	const iso = path.join(ctx.workDir, "dist.iso");
	await run(requireBinary("xorriso", "xorriso"), xorrisoArgs(ctx.inputs.label, mbr, tree, iso), { signal: ctx.signal, timeout: 300_000 });
	await ctx.progress(95);
	return { file: iso };
}

/** The xorriso (mkisofs emulation) arguments for a hybrid BIOS+UEFI ISO; the label is allow-listed. */
export function xorrisoArgs(label: string, mbr: string, tree: string, output: string): string[] {
	return [
		"-as", "mkisofs",
		"-quiet",
		"-o", output,
		"-isohybrid-mbr", mbr,
		"-c", "isolinux/boot.cat",
		"-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-eltorito-alt-boot",
		"-e", "boot/grub.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
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
