/** What a machine the provisioner has nothing for gets: boot from its disk, a menu, or nothing. */
export const UNKNOWN_BOOT_CHOICES = ["local", "menu", "none"] as const;
export type UnknownBoot = (typeof UNKNOWN_BOOT_CHOICES)[number];

/**
 * The one line of iPXE every machine's embedded script chains (iPXE fills in the settings from the
 * NIC and SMBIOS; `:uristring` keeps a serial with spaces one URL).
 */
export function embeddedChain(baseUrl: string): string {
	return `chain ${baseUrl}/api/boot?mac=\${net0/mac}&uuid=\${uuid}&serial=\${serial:uristring}&manufacturer=\${manufacturer:uristring}&product=\${product:uristring}&arch=\${buildarch}&platform=\${platform}`;
}

/** Text iPXE's `echo` prints as it is: no settings expansion (${…}), no line breaks. */
export function ipxeText(text: string): string {
	return text.replace(/[\r\n]+/g, " ").replace(/\$/g, "").replace(/[^\x20-\x7e]/g, "?");
}

/** Text inside a single-quoted shell word. */
function shellQuoted(text: string): string {
	return `'${text.replace(/[\r\n]+/g, " ").replace(/'/g, "'\\''")}'`;
}

/** An iPXE script that says why the machine cannot boot and ends with an error. */
export function ipxeRefusal(reason: string): string {
	return `#!ipxe\necho Cluster Platform: ${ipxeText(reason)}\nsleep 10\nexit 1\n`;
}

/** A pre- or post-boot (shell) script that says why it cannot run and fails. */
export function shellRefusal(reason: string): string {
	return `#!/bin/sh\necho ${shellQuoted(`Cluster Platform: ${reason}`)} >&2\nexit 1\n`;
}

/** The iPXE answer for a machine without a profile: `local` returns to the firmware (its next boot device, normally the disk). */
export function unknownMachineScript(choice: UnknownBoot, mac: string, baseUrl: string, why: string): string {
	const said = ipxeText(`${mac}: ${why}`);
	if (choice === "local") return `#!ipxe\necho Cluster Platform: ${said}; booting from the local disk\nexit\n`;
	if (choice === "none") return `#!ipxe\necho Cluster Platform: ${said}; nothing to boot\nsleep 10\nexit 1\n`;
	return [
		"#!ipxe",
		`menu Cluster Platform: ${said}`,
		"item local Boot from the local disk",
		"item again Ask the provisioner again",
		"item shell iPXE shell",
		"choose --default local --timeout 30000 target || goto local",
		"goto ${target}",
		":local",
		"exit",
		":again",
		embeddedChain(baseUrl),
		":shell",
		"shell",
		"",
	].join("\n");
}
