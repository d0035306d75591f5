// A PXE client's first packet, sent from inside the test LAN: a DHCPDISCOVER built with the npm
// `dhcp` package's encoder (its client cannot finish a lease, so only the encoder and parser are
// used), with the options PXE firmware sends: 60 (PXEClient:Arch), 93 (architecture), 94 (UNDI
// version), 97 (machine GUID), and 77 "iPXE" when posing as iPXE. Prints every answer as JSON.
// Run inside a namespace: ip netns exec <ns> node run-ts.cjs pxe-probe.ts <arch> <ipxe|firmware|http> <ms> [mac]
import crypto from "node:crypto";
import dgram from "node:dgram";
import os from "node:os";
import * as DHCP from "dhcp";
import * as Protocol from "dhcp/lib/protocol.js";

const PXE_OPTIONS: Record<number, { name: string; type: string }> = {
	77: { name: "User Class", type: "ASCII" },
	93: { name: "Client System Architecture", type: "UInt16" },
	94: { name: "Client Network Device Interface", type: "UInt8s" },
	97: { name: "UUID/GUID-based Client Identifier", type: "UInt8s" },
	175: { name: "Etherboot", type: "UInt8s" },
};
for (const [code, option] of Object.entries(PXE_OPTIONS)) {
	try {
		DHCP.addOption(Number(code), option);
	} catch {
		// already known to this version of the package
	}
}

const [archArg = "0", kind = "firmware", listenArg = "3000", macArg = ""] = process.argv.slice(2);
const arch = Number(archArg);
// A chosen MAC (known-machines-only tests), else a random one of QEMU's prefix.
const mac = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(macArg) ? macArg : `52:54:00:${crypto.randomBytes(3).toString("hex").match(/../g)!.join(":")}`;
const xid = crypto.randomBytes(4).readUInt32BE(0);

const options: Record<number, unknown> = {
	53: 1,
	55: [1, 3, 43, 60, 66, 67, 97],
	57: 1472,
	// A UEFI HTTP boot client says HTTPClient (UEFI 2.5+), PXE firmware and iPXE say PXEClient.
	60: `${kind === "http" ? "HTTPClient" : "PXEClient"}:Arch:${String(arch).padStart(5, "0")}:UNDI:003016`,
	93: arch,
	94: [1, 3, 16],
	97: [0, ...crypto.randomBytes(16)],
};
if (kind === "ipxe") options[77] = "iPXE";

/** format() answers its SeqBuffer; the packet is the written part, padded to BOOTP's 300 bytes. */
function encode(messageOptions: Record<number, unknown>, ciaddr = "0.0.0.0"): Buffer {
	const written: { _data: Buffer; _w: number } = Protocol.format({
	op: 1,
	htype: 1,
	hlen: 6,
	hops: 0,
	xid,
	secs: 0,
	flags: 0x8000,
	ciaddr,
	yiaddr: "0.0.0.0",
	siaddr: "0.0.0.0",
	giaddr: "0.0.0.0",
	chaddr: mac,
	sname: "",
	file: "",
	options: messageOptions,
});
	return written._data.subarray(0, Math.max(written._w, 300));
}
const packet = encode(options);

/** PXE sub-options in option 43: the first boot menu item's type (sub-option 9), if any. */
function firstMenuItemType(vendor: number[] | null): number | null {
	if (!vendor) return null;
	for (let i = 0; i + 1 < vendor.length && vendor[i] !== 255; i += 2 + vendor[i + 1]!) {
		if (vendor[i] === 9 && vendor[i + 1]! >= 3) return (vendor[i + 2]! << 8) | vendor[i + 3]!;
	}
	return null;
}

const answers: Record<string, unknown>[] = [];
/** The proxy's answer to the boot-server request (port 4011): it names the boot file. */
let bootServerAnswer: Record<string, unknown> | null = null;
const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
socket.on("message", (message, remote) => {
	try {
		const reply = Protocol.parse(message);
		if (reply.xid !== xid || reply.op !== 2) return;
		const vendor = reply.options[43] ? Buffer.from(reply.options[43]) : null;
		const target = reply.options[53] === 5 ? null : answers;
		const answer = {
			from: remote.address,
			type: reply.options[53],
			yiaddr: reply.yiaddr,
			siaddr: reply.siaddr,
			file: reply.file,
			serverId: reply.options[54] ?? null,
			vendorClass: reply.options[60] ?? null,
			// Option 43 carries the PXE menu (boot server types, menu text, boot file names).
			vendorText: vendor ? vendor.toString("latin1").replace(/[^\x20-\x7e]/g, ".") : null,
			menuItemType: firstMenuItemType(reply.options[43] ?? null),
		};
		if (target) target.push(answer);
		else bootServerAnswer = answer;
	} catch {
		// not a DHCP packet
	}
});
function finish(): void {
	console.log(JSON.stringify({ answers, bootServerAnswer }));
	socket.close();
}

socket.bind(68, () => {
	socket.setBroadcast(true);
	socket.send(packet, 67, "255.255.255.255", (err) => {
		if (err) {
			console.error(`send failed: ${err.message}`);
			process.exit(1);
		}
	});
	setTimeout(() => {
		// The PXE client's second step: ask the proxy (port 4011) for the boot file of its menu item.
		const proxy = answers.find((a) => a.vendorClass === "PXEClient");
		if (!proxy) return finish();
		const request: Record<number, unknown> = { ...options, 53: 3 };
		if (typeof proxy.menuItemType === "number") request[43] = [71, 4, proxy.menuItemType >> 8, proxy.menuItemType & 255, 0, 0, 255];
		// A real client asks from the address it leased; dnsmasq checks it is on the proxied network.
		const own = (os.networkInterfaces().eth0 ?? []).find((a) => a.family === "IPv4")?.address ?? "0.0.0.0";
		socket.send(encode(request, own), 4011, String(proxy.from));
		setTimeout(finish, Math.min(Number(listenArg), 3000));
	}, Number(listenArg));
});
