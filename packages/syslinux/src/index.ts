import fs from "node:fs";
import type { ServiceSchema } from "moleculer";
import { DataTypes, builderManagerMixin, builderWorkerMixin, permanentFailure, type BuildContext, type BuilderSpec } from "@clusterplatform/core";

/** The only files served, by name: Debian's SYSLINUX binaries (nothing a client names is a path). */
export const SYSLINUX_FRAGMENTS = {
	"ldlinux.c32": { file: "/usr/lib/syslinux/modules/bios/ldlinux.c32", debianPackage: "syslinux-common" },
	"isolinux.bin": { file: "/usr/lib/ISOLINUX/isolinux.bin", debianPackage: "isolinux" },
	"isohdpfx.bin": { file: "/usr/lib/ISOLINUX/isohdpfx.bin", debianPackage: "isolinux" },
} as const;
export type SyslinuxFragment = keyof typeof SYSLINUX_FRAGMENTS;

export interface SyslinuxInputs {
	fragment: SyslinuxFragment;
}

export const SYSLINUXS: BuilderSpec<SyslinuxInputs> = {
	name: "syslinuxs",
	fields: { fragment: { type: DataTypes.STRING(16), allowNull: false } },
	params: { fragment: { type: "enum", values: Object.keys(SYSLINUX_FRAGMENTS) } },
	artifactName: (inputs) => inputs.fragment,
};

export async function buildSyslinux(ctx: BuildContext<SyslinuxInputs>) {
	const { file, debianPackage } = SYSLINUX_FRAGMENTS[ctx.inputs.fragment];
	if (!fs.existsSync(file)) permanentFailure(`${file} not found: install it with \`apt-get install ${debianPackage}\``);
	await ctx.progress(50);
	return { file };
}

/** /api/syslinuxs: SYSLINUX BIOS media bootloader parts for the ISO (queue). */
export const SyslinuxsService: ServiceSchema = {
	name: "syslinuxs",
	mixins: [builderManagerMixin(SYSLINUXS)],
};

/** Copies Debian's isolinux/ldlinux binaries into the store. */
export const SyslinuxsWorkerService: ServiceSchema = {
	name: "syslinuxs-worker",
	mixins: [builderWorkerMixin({ ...SYSLINUXS, build: buildSyslinux })],
};

export default SyslinuxsService;
