import net from "node:net";
import { invalid } from "../errors";
import type { BmcFields } from "./types";

const HOST_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
/** A control character would end up in ipmitool's environment or a JSON body the BMC parses its own way. */
const CONTROL = /[\u0000-\u001f\u007f]/;
/** IPMI 2.0 passwords are at most 20 bytes; ipmitool would cut a longer one silently. */
const IPMI_PASSWORD_BYTES = 20;
const IPMI_USER_BYTES = 16;

/**
 * The fields a driver needs, checked: a bad one is a 422 naming `bmc.<field>` (the machines
 * service calls this when a machine is written, so a BMC that can never be reached is refused then).
 */
export function checkBmcFields(fields: BmcFields): BmcFields {
	if (fields.protocol !== "ipmi" && fields.protocol !== "redfish") invalid("bmc.protocol", "must be ipmi or redfish");
	if (typeof fields.address !== "string" || !(net.isIP(fields.address) || HOST_NAME.test(fields.address))) {
		invalid("bmc.address", "must be an IP address or a host name");
	}
	if (!Number.isInteger(fields.port) || fields.port < 1 || fields.port > 65535) invalid("bmc.port", "must be an integer from 1 to 65535");
	checkCredential("bmc.user", fields.user, fields.protocol === "ipmi" ? IPMI_USER_BYTES : 256);
	checkCredential("bmc.password", fields.password, fields.protocol === "ipmi" ? IPMI_PASSWORD_BYTES : 256);
	const pin = fields.certificateSha256 == null || fields.certificateSha256 === "" ? null : normalizeFingerprint(fields.certificateSha256);
	return { ...fields, certificateSha256: pin };
}

function checkCredential(field: string, value: string, maxBytes: number): void {
	if (typeof value !== "string" || value.length === 0) invalid(field, "is required");
	if (Buffer.byteLength(value) > maxBytes) invalid(field, `must be at most ${maxBytes} bytes`);
	if (CONTROL.test(value)) invalid(field, "must not contain control characters");
}

/** "AB:CD:…" (64 hex digits, colons optional, any case) → "abcd…"; a 422 otherwise. */
export function normalizeFingerprint(value: string): string {
	const hex = value.replace(/:/g, "").toLowerCase();
	if (!/^[0-9a-f]{64}$/.test(hex)) invalid("bmc.certificateSha256", "must be a SHA-256 fingerprint: 64 hex digits, colons allowed");
	return hex;
}

/** "abcd…" → "AB:CD:…", the way openssl and browsers show a fingerprint. */
export function displayFingerprint(hex: string): string {
	return hex.toUpperCase().match(/../g)!.join(":");
}
