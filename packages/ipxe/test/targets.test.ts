import { InvalidInputError } from "@clusterplatform/core";
import { BIOS_EXTENSIONS, EFI_PLATFORMS, PREBUILT_GOALS, checkScript, checkTarget, makeGoal, prebuiltFor, scriptDeliveryWithoutEmbedding, type Target } from "../src";

function fieldOf(fn: () => void): string | null {
	try {
		fn();
		return null;
	} catch (err) {
		expect(err).toBeInstanceOf(InvalidInputError);
		return (err as InvalidInputError).data[0].field;
	}
}

describe("iPXE targets", () => {
	it.each([
		[{ platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" }],
		[{ platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "kpxe" }],
		[{ platform: "bin", driver: "ipxe", extension: "lkrn" }],
		[{ platform: "bin-x86_64-pcbios", driver: "undionly", extension: "kpxe" }],
		[{ platform: "bin-x86_64-efi", driver: "snponly", extension: "efi" }],
		[{ platform: "bin-i386-efi", driver: "intel", extension: "efi" }],
	] as [Target][])("accepts %j", (target) => {
		expect(fieldOf(() => checkTarget(target))).toBeNull();
	});

	it.each([
		[{ platform: "bin-x86_64-efi", driver: "ipxe", extension: "lkrn" }, "extension"],
		[{ platform: "bin-arm64-efi", driver: "ipxe", extension: "iso" }, "extension"],
		[{ platform: "bin", driver: "ipxe", extension: "efi" }, "extension"],
		[{ platform: "bin-x86_64-efi", driver: "undionly", extension: "efi" }, "driver"],
		[{ platform: "bin-x86_64-pcbios", driver: "snponly", extension: "kpxe" }, "driver"],
		[{ platform: "bin-x86_64-pcbios", driver: "undionly", extension: "lkrn" }, "extension"],
	] as [Target, string][])("refuses %j naming %s", (target, field) => {
		expect(fieldOf(() => checkTarget(target))).toBe(field);
	});

	it("EFI platforms take only efi; BIOS platforms every BIOS extension", () => {
		for (const platform of EFI_PLATFORMS) for (const extension of BIOS_EXTENSIONS) expect(fieldOf(() => checkTarget({ platform, driver: "ipxe", extension }))).toBe("extension");
		for (const extension of BIOS_EXTENSIONS) expect(fieldOf(() => checkTarget({ platform: "bin-x86_64-pcbios", driver: "ipxe", extension }))).toBeNull();
	});

	it.each([
		["the seed's script", "accepted", "#!ipxe\ndhcp\nchain http://host:30002/api/mainscripts/1"],
		["just the shebang", "accepted", "#!ipxe"],
		["CRLF line ends", "accepted", "#!ipxe\r\necho windows line ends\r\n"],
		["a shell script", "script", "#!/bin/sh\nreboot"],
		["#!ipxe not first", "script", "dhcp\n#!ipxe"],
		["#!ipxeX", "script", "#!ipxeX"],
		["a NUL byte", "script", "#!ipxe\necho \u0000"],
		["an escape sequence", "script", "#!ipxe\necho \u001b[2J"],
		["70 000 bytes", "script", `#!ipxe\n${"#".repeat(70_000)}`],
		["a number", "script", 42],
	])("script with %s: %s", (_label, outcome, script) => {
		expect(fieldOf(() => checkScript(script))).toBe(outcome === "accepted" ? null : outcome);
	});

	it("make goal is <platform>/<driver>.<extension>", () => {
		expect(makeGoal({ platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" })).toBe("bin-x86_64-efi/ipxe.efi");
	});

	it("Debian's prebuilt files cover the seed's three targets, substitutes say why", () => {
		expect(prebuiltFor({ platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" })).toEqual({ file: "ipxe.efi" });
		expect(prebuiltFor({ platform: "bin", driver: "ipxe", extension: "lkrn" })).toEqual({ file: "ipxe.lkrn" });
		const kpxe = prebuiltFor({ platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "kpxe" });
		expect(kpxe?.file).toBe("undionly.kpxe");
		expect(kpxe?.substitute).toMatch(/no ipxe\.kpxe/);
		expect(prebuiltFor({ platform: "bin-i386-efi", driver: "ipxe", extension: "efi" })).toBeNull();
		expect(PREBUILT_GOALS).toContain("bin-x86_64-efi/snponly.efi");
	});

	it("says how a script reaches a host when it is not embedded", () => {
		expect(scriptDeliveryWithoutEmbedding("lkrn")).toMatch(/INITRD/);
		expect(scriptDeliveryWithoutEmbedding("kpxe")).toMatch(/DHCP/);
		expect(scriptDeliveryWithoutEmbedding("efi")).toMatch(/DHCP/);
		for (const extension of ["lkrn", "kpxe", "efi", "iso"] as const) expect(scriptDeliveryWithoutEmbedding(extension)).toMatch(/^not embedded/);
	});
});
