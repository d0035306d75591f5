import fs from "node:fs";
import { invalid } from "./errors";

/**
 * The LAN interface a site worker's dnsmasq is bound to. The name ends up in a dnsmasq config, so
 * it is allow-listed, never escaped.
 */

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':', whitespace or quotes. */
export const DEVICE_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

export function checkDeviceName(value: unknown): string {
	if (typeof value !== "string" || !DEVICE_PATTERN.test(value) || value === "." || value === "..") {
		invalid("device", "must be a network interface name (letters, digits, '_', '.', '-'; at most 15)");
	}
	return value;
}

/** The device must exist on the node the site worker runs on. */
export function checkDeviceExists(device: string): void {
	checkDeviceName(device);
	if (!fs.existsSync(`/sys/class/net/${device}`)) {
		const known = fs.existsSync("/sys/class/net") ? fs.readdirSync("/sys/class/net").join(", ") : "none";
		invalid("device", `no interface "${device}" on this distributor (it has: ${known})`);
	}
}
