import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { exec, requireBinary } from "@clusterplatform/core";
import { BIOS_BOOT_FILE, UEFI_ARM64_BOOT_FILE, UEFI_BOOT_FILE, UEFI_IA32_BOOT_FILE, checkDeviceName, checkUrl, proxyNetworkOf, renderDnsmasqConfig } from "@clusterplatform/distributor";

const LAN = { eth0: [{ address: "192.168.178.20", netmask: "255.255.255.0", family: "IPv4", mac: "00:00:00:00:00:00", internal: false, cidr: "192.168.178.20/24" }] } as unknown as NodeJS.Dict<os.NetworkInterfaceInfo[]>;

function problemOf(fn: () => unknown): { field: string; message: string } {
	try {
		fn();
	} catch (err) {
		return (err as { data: { field: string; message: string }[] }).data[0]!;
	}
	throw new Error("expected a validation error");
}

describe("distributor input validation", () => {
	it("derives the proxy network from the router address the seed sends", () => {
		expect(proxyNetworkOf("eth0", "192.168.178.1", LAN)).toEqual({ network: "192.168.178.0", netmask: "255.255.255.0", address: "192.168.178.20" });
	});

	it("refuses a range off the device's networks, naming range", () => {
		expect(problemOf(() => proxyNetworkOf("eth0", "10.0.0.1", LAN))).toMatchObject({ field: "range", message: expect.stringContaining("192.168.178.20/24") });
		expect(problemOf(() => proxyNetworkOf("eth0", "192.168.178", LAN)).field).toBe("range");
		expect(problemOf(() => proxyNetworkOf("eth1", "192.168.178.1", LAN)).field).toBe("device");
	});

	it.each(["eth0;reboot", "a b", "../../etc", "x".repeat(16), "-", "", "eth0\ninterface=*"])("refuses device %j", (device) => {
		expect(problemOf(() => checkDeviceName(device)).field).toBe("device");
	});

	it.each(["enp0s25", "br-lan.10", "wlan0", "veth_1"])("accepts device %j", (device) => {
		expect(checkDeviceName(device)).toBe(device);
	});

	it.each([
		["ftp://example.org/ipxe.efi", "must use http or https"],
		["file:///etc/shadow", "must use http or https"],
		["http://example.org/a,b", "characters"],
		["http://example.org/a b", "characters"],
		["http://example.org/x\nenable-ra", "characters"],
		["not a url", "http"],
	])("refuses URL %j", (url, reason) => {
		expect(problemOf(() => checkUrl("ipxePxeUefiUrl", url))).toMatchObject({ field: "ipxePxeUefiUrl", message: expect.stringContaining(reason) });
	});
});

describe("dnsmasq proxy-DHCP configuration", () => {
	let dir: string;
	beforeAll(() => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-dnsmasq-conf-"));
	});
	afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

	const settings = (scriptUrl: string | null) => ({
		device: "enp0s25",
		proxy: { network: "192.168.178.0", netmask: "255.255.255.0" },
		tftpRoot: "/var/lib/clusterplatform/tftp",
		leaseFile: "/var/lib/clusterplatform/dnsmasq.leases",
		scriptUrl,
	});

	it("answers PXE firmware with iPXE over TFTP and iPXE with the script URL", () => {
		const lines = renderDnsmasqConfig(settings("http://10.0.0.1:3000/api/mainscripts/1")).split("\n");
		for (const line of [
			"port=0",
			"interface=enp0s25",
			"bind-interfaces",
			"enable-tftp",
			"tftp-root=/var/lib/clusterplatform/tftp",
			"dhcp-range=192.168.178.0,proxy,255.255.255.0",
			"dhcp-userclass=set:ipxe,iPXE",
			"dhcp-match=set:ipxe,175",
			`pxe-service=tag:!ipxe,x86PC,clusterplatform,${BIOS_BOOT_FILE}`,
			`pxe-service=tag:!ipxe,BC_EFI,clusterplatform,${UEFI_BOOT_FILE}`,
			`pxe-service=tag:!ipxe,X86-64_EFI,clusterplatform,${UEFI_BOOT_FILE}`,
			"pxe-service=tag:ipxe,x86PC,clusterplatform,http://10.0.0.1:3000/api/mainscripts/1",
			"dhcp-boot=tag:ipxe,http://10.0.0.1:3000/api/mainscripts/1",
		]) {
			expect(lines).toContain(line);
		}
	});

	it("answers ia32 (arch 6) and arm64 (arch 11) UEFI firmware only when their binaries are configured", () => {
		const seedOnly = renderDnsmasqConfig(settings("http://10.0.0.1:3000/api/mainscripts/1"));
		expect(seedOnly).not.toMatch(/IA32_EFI|ARM64_EFI/);
		const all = renderDnsmasqConfig({ ...settings("http://10.0.0.1:3000/api/mainscripts/1"), bootFiles: [BIOS_BOOT_FILE, UEFI_BOOT_FILE, UEFI_IA32_BOOT_FILE, UEFI_ARM64_BOOT_FILE] }).split("\n");
		for (const line of [
			`pxe-service=tag:!ipxe,IA32_EFI,clusterplatform,${UEFI_IA32_BOOT_FILE}`,
			`pxe-service=tag:!ipxe,ARM64_EFI,clusterplatform,${UEFI_ARM64_BOOT_FILE}`,
			"pxe-service=tag:ipxe,IA32_EFI,clusterplatform,http://10.0.0.1:3000/api/mainscripts/1",
			"pxe-service=tag:ipxe,ARM64_EFI,clusterplatform,http://10.0.0.1:3000/api/mainscripts/1",
			`pxe-service=tag:!ipxe,x86PC,clusterplatform,${BIOS_BOOT_FILE}`,
		]) {
			expect(all).toContain(line);
		}
	});

	it("gives iPXE clients nothing to chain to without a script URL (an embedded script does that)", () => {
		expect(renderDnsmasqConfig(settings(null))).not.toMatch(/tag:ipxe,/);
	});

	it("is accepted by dnsmasq's own syntax check", async () => {
		const file = path.join(dir, "dnsmasq.conf");
		fs.writeFileSync(file, renderDnsmasqConfig({ ...settings("http://10.0.0.1:3000/api/mainscripts/1"), bootFiles: [BIOS_BOOT_FILE, UEFI_BOOT_FILE, UEFI_IA32_BOOT_FILE, UEFI_ARM64_BOOT_FILE] }));
		const result = await exec(requireBinary("dnsmasq", "dnsmasq-base"), ["--test", `--conf-file=${file}`], { timeout: 10_000 });
		expect(`${result.stdout}${result.stderr}`).toMatch(/syntax check OK/);
		expect(result.code).toBe(0);
	});
});
