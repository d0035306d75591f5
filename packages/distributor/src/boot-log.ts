import fsp from "node:fs/promises";
import path from "node:path";
import type { BootEvent } from "@clusterplatform/core";

type SeenEvent = Pick<BootEvent, "kind" | "ip" | "mac" | "detail">;

const PXE_LINE = /^dnsmasq-dhcp\[\d+\]: (\d+) PXE\([^)]*\) (?:(\d{1,3}(?:\.\d{1,3}){3}) )?([0-9a-f]{2}(?::[0-9a-f]{2}){5}) ?(.*)$/i;
const BOOTFILE_LINE = /^dnsmasq-dhcp\[\d+\]: (\d+) bootfile name: (\S+)$/;
const TFTP_SENT = /^dnsmasq-tftp\[\d+\]: sent (\S+) to (\S+)$/;
const TFTP_MISSING = /^dnsmasq-tftp\[\d+\]: file (\S+) not found for (\S+)$/;
const PENDING_KEPT = 256;

/**
 * Turns dnsmasq's log (log-dhcp, TFTP) into boot events. A proxy-DHCP answer is logged over
 * several lines sharing the transaction id: the `PXE(<if>) <mac>` line names the host, the
 * `bootfile name:` line what it was told to boot (ipxe.efi first, then the script URL once iPXE
 * asks) — the event is the two together.
 */
export class DnsmasqBootLog {
	private readonly pending = new Map<string, { ip: string | null; mac: string; what: string }>();

	/** The event this line completes, or null. */
	parse(line: string): SeenEvent | null {
		let match = PXE_LINE.exec(line);
		if (match) {
			const [, xid, ip, mac, what] = match;
			if (this.pending.size >= PENDING_KEPT) this.pending.delete(this.pending.keys().next().value!);
			this.pending.set(xid!, { ip: ip ?? null, mac: mac!.toLowerCase(), what: what?.trim() || "request" });
			return null;
		}
		if ((match = BOOTFILE_LINE.exec(line))) {
			const host = this.pending.get(match[1]!);
			if (!host) return null;
			this.pending.delete(match[1]!);
			return { kind: "dhcp", ip: host.ip, mac: host.mac, detail: `${host.what}: boot ${match[2]!.slice(0, 400)}` };
		}
		// The MAC of a transfer's address is filled in per batch (completeMacsFromNeighbours).
		if ((match = TFTP_SENT.exec(line))) return { kind: "tftp", ip: match[2]!, mac: null, detail: `sent ${path.basename(match[1]!)}` };
		if ((match = TFTP_MISSING.exec(line))) return { kind: "tftp", ip: match[2]!, mac: null, detail: `not found: ${path.basename(match[1]!)}` };
		return null;
	}
}

/**
 * A proxy-DHCP answer names the MAC but not the address the router leased, a TFTP transfer or an
 * HTTP download the address only: the kernel's neighbour table, fresh from that transfer, links
 * the two. Read once per batch of events (BootEventRecorder's `complete`), asynchronously.
 */
export async function completeMacsFromNeighbours(events: Pick<BootEvent, "ip" | "mac">[], arpTable = "/proc/net/arp"): Promise<void> {
	const missing = events.filter((event) => event.ip && !event.mac);
	if (missing.length === 0) return;
	const table = neighbourTable(await fsp.readFile(arpTable, "utf8").catch(() => ""));
	for (const event of missing) event.mac = table.get(event.ip!) ?? null;
}

/** IPv4 address → MAC of the complete entries of /proc/net/arp's text. */
function neighbourTable(text: string): Map<string, string> {
	const table = new Map<string, string>();
	for (const row of text.split("\n").slice(1)) {
		const [address, , flags, mac] = row.trim().split(/\s+/);
		// Flags 0x0: an incomplete entry, no answer yet.
		if (address && flags !== "0x0" && mac && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac) && mac !== "00:00:00:00:00:00") table.set(address, mac.toLowerCase());
	}
	return table;
}
