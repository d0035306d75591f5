import fsp from "node:fs/promises";
import path from "node:path";
import type { ServiceSchema } from "moleculer";
import {
	DataTypes,
	builderManagerMixin,
	builderWorkerMixin,
	invalid,
	requireBinary,
	run,
	type BuildContext,
	type BuilderSpec,
} from "@clusterplatform/core";

/**
 * An ISO9660 volume id: at most 32 characters from a small allow-list. GRUB finds the ISO by it
 * (`search --label "<label>"` in grub.cfg), so it must never need quoting or escaping.
 */
export const VOLUME_LABEL_PARAM = {
	type: "string",
	min: 1,
	max: 32,
	pattern: /^[A-Za-z0-9_.-](?:[A-Za-z0-9 _.-]*[A-Za-z0-9_.-])?$/,
	messages: { stringPattern: "The 'label' field must be letters, digits, spaces, '_', '.' or '-' (an ISO9660 volume id), not starting or ending with a space." },
} as const;

/** GRUB target per architecture: "x86" is a real 32-bit UEFI build, not x64 renamed. */
export const GRUB_TARGETS = {
	x64: { target: "x86_64-efi", loader: "BOOTX64.EFI" },
	x86: { target: "i386-efi", loader: "BOOTIA32.EFI" },
} as const;
export type GrubArchitecture = keyof typeof GRUB_TARGETS;

/** Where the ISO layout puts UEFI iPXE; grub.cfg chainloads it from the volume it finds by label. */
export const IPXE_EFI_PATH = "/ipxe.efi";

/** Just what grub.cfg needs, so each loader is ~1 MB instead of ~10 MB with every module. */
const GRUB_MODULES = "part_gpt part_msdos iso9660 fat search search_label chain normal configfile echo test sleep reboot";

/** The embedded grub.cfg: find the ISO by its label, chainload iPXE, say so if it cannot. */
export function grubConfig(label: string): string {
	return [
		"set timeout=0",
		`echo "Cluster Platform Provisioner: looking for the volume labelled ${label}"`,
		`search --no-floppy --set=root --label "${label}"`,
		`echo "Cluster Platform Provisioner: chainloading iPXE from ($root)${IPXE_EFI_PATH}"`,
		`chainloader ($root)${IPXE_EFI_PATH}`,
		"boot",
		`echo "Cluster Platform Provisioner: could not start ${IPXE_EFI_PATH} from the volume labelled ${label}"`,
		"sleep 30",
		"",
	].join("\n");
}

/** What a client sends for a GRUB loader (checked against GRUBS.params first). */
export interface GrubInputs {
	label: string;
	platform: "x86_64-efi" | "i386-efi";
	architecture: GrubArchitecture;
	extension: "efi";
	fragment: "img" | "efi";
}

export const GRUBS: BuilderSpec<GrubInputs> = {
	name: "grubs",
	fields: {
		label: { type: DataTypes.STRING(32), allowNull: false },
		platform: { type: DataTypes.STRING(16), allowNull: false },
		architecture: { type: DataTypes.STRING(8), allowNull: false },
		extension: { type: DataTypes.STRING(8), allowNull: false },
		fragment: { type: DataTypes.STRING(8), allowNull: false },
	},
	params: {
		label: VOLUME_LABEL_PARAM,
		platform: { type: "enum", values: ["x86_64-efi", "i386-efi"], default: "x86_64-efi" },
		architecture: { type: "enum", values: Object.keys(GRUB_TARGETS) },
		extension: { type: "enum", values: ["efi"], default: "efi" },
		fragment: { type: "enum", values: ["img", "efi"] },
	},
	validate(inputs) {
		// "x86_64-efi" with architecture x86 is how the seed asks for the 32-bit build; the reverse is a contradiction.
		if (inputs.platform === "i386-efi" && inputs.architecture !== "x86") invalid("platform", "i386-efi builds the x86 (32-bit) loader; use architecture \"x86\"");
	},
	artifactName: (inputs) => (inputs.fragment === "img" ? "grub.img" : "grub.zip"),
};

async function mkstandalone(ctx: BuildContext<GrubInputs>, architecture: GrubArchitecture, cfg: string): Promise<string> {
	const { target, loader } = GRUB_TARGETS[architecture];
	const output = path.join(ctx.workDir, loader);
	await run(requireBinary("grub-mkstandalone", architecture === "x64" ? "grub-efi-amd64-bin" : "grub-efi-ia32-bin"), [
		"-O", target,
		`--modules=${GRUB_MODULES}`,
		`--install-modules=${GRUB_MODULES}`,
		"--locales=", "--fonts=", "--themes=",
		"-o", output,
		`boot/grub/grub.cfg=${cfg}`,
	], { signal: ctx.signal, timeout: 120_000 });
	return output;
}

/** An El Torito EFI image: FAT made by mkfs.vfat, filled by mtools (no loop mounts, no root). */
async function fatImage(ctx: BuildContext<GrubInputs>, loaders: string[]): Promise<string> {
	const image = path.join(ctx.workDir, "grub.img");
	let bytes = 0;
	for (const file of loaders) bytes += (await fsp.stat(file)).size;
	const kib = Math.max(1440, Math.ceil((bytes * 1.1) / 1024) + 256);
	const options = { signal: ctx.signal, timeout: 60_000, env: { MTOOLS_SKIP_CHECK: "1" } };
	await run(requireBinary("mkfs.vfat", "dosfstools"), ["-C", "-n", "EFIBOOT", "-i", "43505050", image, String(kib)], options);
	await run(requireBinary("mmd", "mtools"), ["-i", image, "::/EFI", "::/EFI/BOOT"], options);
	for (const file of loaders) await run(requireBinary("mcopy", "mtools"), ["-i", image, file, `::/EFI/BOOT/${path.basename(file)}`], options);
	return image;
}

/** The EFI tree (EFI/BOOT/<loader>) as a zip, for the ISO's file system or a FAT USB stick. */
async function efiZip(ctx: BuildContext<GrubInputs>, loader: string): Promise<string> {
	const tree = path.join(ctx.workDir, "tree");
	await fsp.mkdir(path.join(tree, "EFI", "BOOT"), { recursive: true });
	await fsp.copyFile(loader, path.join(tree, "EFI", "BOOT", path.basename(loader)));
	const archive = path.join(ctx.workDir, "grub.zip");
	await run(requireBinary("zip", "zip"), ["-q", "-X", "-r", archive, "EFI"], { cwd: tree, signal: ctx.signal, timeout: 60_000 });
	return archive;
}

/**
 * fragment "img": a FAT image carrying both EFI/BOOT/BOOTX64.EFI and EFI/BOOT/BOOTIA32.EFI, so one
 * El Torito image starts on 64- and 32-bit UEFI firmware (`architecture` is recorded, the image is
 * the same). fragment "efi": the requested architecture's EFI tree as grub.zip.
 */
export async function buildGrub(ctx: BuildContext<GrubInputs>) {
	const cfg = path.join(ctx.workDir, "grub.cfg");
	await fsp.writeFile(cfg, grubConfig(ctx.inputs.label));
	await ctx.progress(10);
	if (ctx.inputs.fragment === "img") {
		const x64 = await mkstandalone(ctx, "x64", cfg);
		await ctx.progress(40);
		const x86 = await mkstandalone(ctx, "x86", cfg);
		await ctx.progress(70);
		const file = await fatImage(ctx, [x64, x86]);
		await ctx.progress(95);
		return { file };
	}
	const loader = await mkstandalone(ctx, ctx.inputs.architecture, cfg);
	await ctx.progress(60);
	const file = await efiZip(ctx, loader);
	await ctx.progress(95);
	return { file };
}

/** /api/grubs: GRUB UEFI media bootloaders that find the ISO by label and chainload iPXE (queue). */
export const GrubsService: ServiceSchema = {
	name: "grubs",
	mixins: [builderManagerMixin(GRUBS)],
};

/** Builds grubs jobs with grub-mkstandalone, mkfs.vfat, mtools and zip. */
export const GrubsWorkerService: ServiceSchema = {
	name: "grubs-worker",
	mixins: [builderWorkerMixin({ ...GRUBS, build: buildGrub })],
};

export default GrubsService;
