import { invalid } from "@clusterplatform/core";

/**
 * What a client may ask iPXE to build: allow-lists of platforms, drivers and extensions and the
 * combinations that make sense. Only values from these lists ever reach `make`, as one
 * `<platform>/<driver>.<extension>` argument.
 */

export const EFI_PLATFORMS = ["bin-x86_64-efi", "bin-i386-efi", "bin-arm64-efi"] as const;
export const BIOS_PLATFORMS = ["bin", "bin-x86_64-pcbios"] as const;
export const PLATFORMS = [...BIOS_PLATFORMS, ...EFI_PLATFORMS] as const;

/** Driver names that exist as build targets in iPXE's tree ("ipxe" = every native driver). */
export const DRIVERS = ["ipxe", "undionly", "snponly", "snp", "intel", "virtio-net", "realtek", "vmxnet3"] as const;

export const EFI_EXTENSIONS = ["efi"] as const;
export const BIOS_EXTENSIONS = ["kpxe", "kkpxe", "pxe", "lkrn", "usb", "iso"] as const;
export const EXTENSIONS = [...BIOS_EXTENSIONS, ...EFI_EXTENSIONS] as const;

export type Platform = (typeof PLATFORMS)[number];
export type Driver = (typeof DRIVERS)[number];
export type Extension = (typeof EXTENSIONS)[number];

export interface Target {
	platform: Platform;
	driver: Driver;
	extension: Extension;
}

/** Drivers that only exist on one firmware: UNDI needs a BIOS PXE stack, SNP an EFI one. */
const BIOS_ONLY_DRIVERS: readonly Driver[] = ["undionly"];
const EFI_ONLY_DRIVERS: readonly Driver[] = ["snponly", "snp"];
/** undionly drives the NIC through the PXE stack the firmware left loaded, so only PXE images make sense. */
const UNDI_EXTENSIONS: readonly Extension[] = ["kpxe", "kkpxe", "pxe"];

/** The largest script accepted; iPXE scripts are a few lines that chain to the registries. */
export const MAX_SCRIPT_BYTES = 64 * 1024;

export function isEfiPlatform(platform: Platform): boolean {
	return (EFI_PLATFORMS as readonly string[]).includes(platform);
}

/** What a client sends for an iPXE binary: its target and the script to embed. */
export type IpxeInputs = Target & { script: string };

/** Cross-field checks the per-field allow-lists cannot express; throws a 422 naming the field. */
export function checkTarget(target: Target): void {
	const efi = isEfiPlatform(target.platform);
	if (efi && !(EFI_EXTENSIONS as readonly string[]).includes(target.extension)) {
		invalid("extension", `platform ${target.platform} builds only ${EFI_EXTENSIONS.join(", ")}, not ${target.extension}`);
	}
	if (!efi && !(BIOS_EXTENSIONS as readonly string[]).includes(target.extension)) {
		invalid("extension", `platform ${target.platform} builds only ${BIOS_EXTENSIONS.join(", ")}, not ${target.extension}`);
	}
	if (efi && BIOS_ONLY_DRIVERS.includes(target.driver)) {
		invalid("driver", `driver ${target.driver} needs a BIOS platform (${BIOS_PLATFORMS.join(", ")}), not ${target.platform}`);
	}
	if (!efi && EFI_ONLY_DRIVERS.includes(target.driver)) {
		invalid("driver", `driver ${target.driver} needs an EFI platform (${EFI_PLATFORMS.join(", ")}), not ${target.platform}`);
	}
	if (target.driver === "undionly" && !UNDI_EXTENSIONS.includes(target.extension)) {
		invalid("extension", `driver undionly builds only ${UNDI_EXTENSIONS.join(", ")} (it uses the PXE stack the firmware loaded), not ${target.extension}`);
	}
}

/**
 * An iPXE script: "#!ipxe" first, bounded, and free of control characters other than tab, CR and
 * LF (a NUL would end the embedded script early; the others are typing accidents).
 */
export function checkScript(script: unknown): void {
	if (typeof script !== "string") invalid("script", "must be a string");
	if (!/^#!ipxe(\s|$)/.test(script)) invalid("script", 'must start with "#!ipxe"');
	if (Buffer.byteLength(script, "utf8") > MAX_SCRIPT_BYTES) invalid("script", `must be at most ${MAX_SCRIPT_BYTES} bytes`);
	const control = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.exec(script);
	if (control) invalid("script", `must not contain control character U+${control[0].charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The make goal for a target, e.g. "bin-x86_64-efi/ipxe.efi". */
export function makeGoal(target: Target): string {
	return `${target.platform}/${artifactFileName(target)}`;
}

/** The artifact's file name, e.g. "ipxe.efi" (also the last part of its download URL). */
export function artifactFileName(target: Pick<Target, "driver" | "extension">): string {
	return `${target.driver}.${target.extension}`;
}
