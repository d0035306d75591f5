import fsp from "node:fs/promises";
import path from "node:path";
import { exec } from "@clusterplatform/core";
import { makeGoal, type Extension, type Target } from "./targets";

/**
 * Debian's prebuilt iPXE (package `ipxe`, a 2019 snapshot) for workers without a source tree.
 * These binaries carry no embedded script; the build row says so and says how the script
 * reaches the booting host instead.
 */

export const DEBIAN_IPXE_DIR = "/usr/lib/ipxe";

export interface PrebuiltChoice {
	/** File name under /usr/lib/ipxe. */
	file: string;
	/** Why a file other than the exact target is delivered, when it is. */
	substitute?: string;
}

/** Debian builds its BIOS images for platform "bin" (32-bit); they run on every x86 BIOS host. */
const BIOS_32_ON_64 = "Debian builds BIOS images for platform bin (32-bit), which run on x86-64 BIOS hosts too";
const UNDI_FOR_IPXE_KPXE =
	"Debian ships no ipxe.kpxe; undionly.kpxe is its PXE-chainloading counterpart, driving the NIC through the firmware's UNDI stack instead of iPXE's native drivers";

const PREBUILT: Record<string, PrebuiltChoice> = {
	"bin/ipxe.lkrn": { file: "ipxe.lkrn" },
	"bin/ipxe.pxe": { file: "ipxe.pxe" },
	"bin/ipxe.iso": { file: "ipxe.iso" },
	"bin/undionly.kpxe": { file: "undionly.kpxe" },
	"bin/undionly.kkpxe": { file: "undionly.kkpxe" },
	"bin/ipxe.kpxe": { file: "undionly.kpxe", substitute: UNDI_FOR_IPXE_KPXE },
	"bin-x86_64-pcbios/ipxe.lkrn": { file: "ipxe.lkrn", substitute: BIOS_32_ON_64 },
	"bin-x86_64-pcbios/ipxe.pxe": { file: "ipxe.pxe", substitute: BIOS_32_ON_64 },
	"bin-x86_64-pcbios/ipxe.iso": { file: "ipxe.iso", substitute: BIOS_32_ON_64 },
	"bin-x86_64-pcbios/undionly.kpxe": { file: "undionly.kpxe", substitute: BIOS_32_ON_64 },
	"bin-x86_64-pcbios/undionly.kkpxe": { file: "undionly.kkpxe", substitute: BIOS_32_ON_64 },
	"bin-x86_64-pcbios/ipxe.kpxe": { file: "undionly.kpxe", substitute: `${BIOS_32_ON_64}; ${UNDI_FOR_IPXE_KPXE}` },
	"bin-x86_64-efi/ipxe.efi": { file: "ipxe.efi" },
	"bin-x86_64-efi/snponly.efi": { file: "snponly.efi" },
};

/** Every target Debian's package can serve, as make goals ("bin-x86_64-efi/ipxe.efi"). */
export const PREBUILT_GOALS = Object.keys(PREBUILT);

/** The prebuilt file for a target, or null when Debian's package has none. */
export function prebuiltFor(target: Target): PrebuiltChoice | null {
	return PREBUILT[makeGoal(target)] ?? null;
}

/** Why a target cannot be served without a source tree, as the failed row's error says it. */
export function notAvailableWithoutSource(target: Target): string {
	return `${makeGoal(target)} is not available without IPXE_SOURCE_DIR: Debian's prebuilt iPXE offers only ${PREBUILT_GOALS.join(", ")}`;
}

/** How a script reaches a host that boots a prebuilt (script-less) iPXE of this extension. */
export function scriptDeliveryWithoutEmbedding(extension: Extension): string {
	const prefix = "not embedded (Debian's prebuilt iPXE carries no script): ";
	switch (extension) {
		case "lkrn":
			return `${prefix}boot ipxe.lkrn with the script as its INITRD (e.g. isolinux \`INITRD /script.ipxe\` on an ISO, or qemu -initrd); iPXE runs it`;
		case "iso":
			return `${prefix}the ISO's iPXE asks DHCP for its script: a distributor's proxy-DHCP answer (iPXE user-class → script URL) delivers it`;
		default:
			return `${prefix}the script comes from a distributor's DHCP answer (iPXE user-class → script URL)`;
	}
}

export const EMBEDDED_DELIVERY = "embedded in the binary (built with EMBED=)";

/** The installed file for a choice (symlinks such as ipxe.efi → /boot/ipxe.efi resolved), or null if missing. */
export async function prebuiltPath(choice: PrebuiltChoice, dir = DEBIAN_IPXE_DIR): Promise<string | null> {
	try {
		return await fsp.realpath(path.join(dir, choice.file));
	} catch {
		return null;
	}
}

let debianVersion: Promise<string> | null = null;

/** "Debian ipxe 1.0.0+git-20190125.36a4c85-5.1", for the row's record of what produced the file. */
export function debianIpxeVersion(): Promise<string> {
	debianVersion ??= exec("dpkg-query", ["-W", "-f", "${Version}", "ipxe"], { timeout: 10_000 }).then((result) =>
		result.code === 0 && result.stdout.trim() ? `Debian ipxe ${result.stdout.trim()}` : "Debian ipxe package",
	);
	return debianVersion;
}
