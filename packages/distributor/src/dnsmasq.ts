import type { ProxyNetwork } from "./validation";

/** Names the boot files get in the TFTP root; the PXE menu entries point at them. */
export const BIOS_BOOT_FILE = "undionly.kpxe";
export const UEFI_BOOT_FILE = "ipxe.efi";
/** The optional binaries for 32-bit x86 UEFI (bin-i386-efi) and 64-bit ARM UEFI (bin-arm64-efi). */
export const UEFI_IA32_BOOT_FILE = "ipxe-ia32.efi";
export const UEFI_ARM64_BOOT_FILE = "ipxe-arm64.efi";

/**
 * Which boot file answers which client architecture (DHCP option 93, RFC 4578 and IANA's
 * "Processor Architecture Types"), and dnsmasq's name for it in pxe-service. dnsmasq numbers
 * X86-64_EFI 7 and BC_EFI 9, the reverse of the registry's names; both are x64 UEFI in practice.
 */
export interface BootArchitecture {
	/** Settings field of the binary (the seed's two, and the optional ia32 and arm64 ones). */
	field: "ipxePxeBiosUrl" | "ipxePxeUefiUrl" | "ipxePxeUefiIa32Url" | "ipxePxeUefiArm64Url";
	file: string;
	/** PXE client architectures (option 93) and dnsmasq's CSA names for them. */
	pxe: { arch: number; csa: string }[];
	/** UEFI HTTP boot client architectures (option 93 with vendor class HTTPClient); none for BIOS. */
	http: number[];
	label: string;
}

export const BOOT_ARCHITECTURES: readonly BootArchitecture[] = [
	{ field: "ipxePxeBiosUrl", file: BIOS_BOOT_FILE, pxe: [{ arch: 0, csa: "x86PC" }], http: [], label: "x86 BIOS" },
	{ field: "ipxePxeUefiUrl", file: UEFI_BOOT_FILE, pxe: [{ arch: 7, csa: "X86-64_EFI" }, { arch: 9, csa: "BC_EFI" }], http: [16], label: "x64 UEFI" },
	{ field: "ipxePxeUefiIa32Url", file: UEFI_IA32_BOOT_FILE, pxe: [{ arch: 6, csa: "IA32_EFI" }], http: [15], label: "ia32 UEFI" },
	{ field: "ipxePxeUefiArm64Url", file: UEFI_ARM64_BOOT_FILE, pxe: [{ arch: 11, csa: "ARM64_EFI" }], http: [19], label: "arm64 UEFI" },
];

export interface DnsmasqSettings {
	device: string;
	proxy: ProxyNetwork;
	tftpRoot: string;
	leaseFile: string;
	/** Where clients already running iPXE chain to (e.g. /api/mainscripts/1); none: they get no answer. */
	scriptUrl?: string | null;
	/** Boot files present in the TFTP root (default: the seed's two); an architecture without its file gets no answer. */
	bootFiles?: readonly string[];
	/** Known-machines-only: the file of `<mac>,set:known` lines; every other MAC is ignored. None: everyone is answered. */
	knownHostsFile?: string | null;
}

/** The dhcp-hostsfile of a known-machines-only distributor: each MAC tagged "known". */
export function renderKnownHosts(macs: readonly string[]): string {
	return macs.map((mac) => `${mac},set:known\n`).join("");
}

/**
 * dnsmasq as a proxy DHCP server next to the LAN's router: it hands out no addresses (the router
 * does), only boot information. PXE firmware (not iPXE yet) gets the iPXE binary of its
 * architecture over TFTP; iPXE itself (user class "iPXE" or option 175) gets the script URL, so a
 * prebuilt iPXE with no embedded script still knows where to go. (dnsmasq's proxy mode answers
 * only vendor class PXEClient: UEFI HTTP boot clients are answered by http-boot.ts.)
 */
export function renderDnsmasqConfig(settings: DnsmasqSettings): string {
	const lines = [
		"# Written by the clusterplatform distributor worker on every configure; edits are lost.",
		"port=0",
		`interface=${settings.device}`,
		"bind-interfaces",
		// The TFTP root is in the worker's private data dir, which an unprivileged user cannot read;
		// tftp-secure still limits TFTP to files owned by that user.
		"user=root",
		"pid-file=",
		`dhcp-leasefile=${settings.leaseFile}`,
		"log-dhcp",
		`dhcp-range=${settings.proxy.network},proxy,${settings.proxy.netmask}`,
		"enable-tftp",
		`tftp-root=${settings.tftpRoot}`,
		"tftp-secure",
		"dhcp-userclass=set:ipxe,iPXE",
		"dhcp-match=set:ipxe,175",
	];
	const present = settings.bootFiles ?? [BIOS_BOOT_FILE, UEFI_BOOT_FILE];
	const served = BOOT_ARCHITECTURES.filter((a) => present.includes(a.file));
	// PXE firmware gets the iPXE binary of its architecture (option 93) over TFTP.
	for (const architecture of served) for (const { csa } of architecture.pxe) lines.push(`pxe-service=tag:!ipxe,${csa},clusterplatform,${architecture.file}`);
	if (settings.scriptUrl) {
		for (const architecture of served) for (const { csa } of architecture.pxe) lines.push(`pxe-service=tag:ipxe,${csa},clusterplatform,${settings.scriptUrl}`);
		lines.push(`dhcp-boot=tag:ipxe,${settings.scriptUrl}`);
	}
	// dnsmasq tags a client "known" when a dhcp-host line matches its MAC; proxy answers (and the
	// port-4011 boot-server answers) to any other client are dropped ("proxy-ignored" in its log).
	if (settings.knownHostsFile) lines.push(`dhcp-hostsfile=${settings.knownHostsFile}`, "dhcp-ignore=tag:!known");
	return `${lines.join("\n")}\n`;
}
