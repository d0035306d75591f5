import net from "node:net";
import { ARTIFACT_ID_PARAM, IPV4_PATTERN, InvalidInputError, PORT_PARAM, checkBmcFields, invalid, isHostName, type FieldProblem } from "@clusterplatform/core";

export const ARCHITECTURES = ["x86_64", "i386", "arm64"] as const;
export const FIRMWARES = ["bios", "uefi"] as const;
export const MACHINE_STATUSES = ["unknown", "discovered", "provisioning", "ready", "failed"] as const;
export const BMC_PROTOCOLS = ["ipmi", "redfish"] as const;
export type MachineStatus = (typeof MACHINE_STATUSES)[number];

/** MACs a machine may have (NICs, BMC-shared ports): enough for any server, small enough to index. */
export const MAX_MACS = 16;
export const MAX_LABELS = 32;
export const LABEL_VALUE_MAX = 253;
/** A label key names a template value too ({{labels.rack}}): no dots, slashes or spaces. */
export const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** aa:bb:cc:dd:ee:ff, also with '-' or upper case (as vendors print them); stored lower case with ':'. */
const MAC_INPUT = /^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$/;
const UUID_INPUT = /^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/;

/**
 * Operator-set text that templates render raw (serial, manufacturer, product, label values,
 * bmcUser): templates do not escape, so it holds only characters that neither a shell, iPXE nor
 * a kernel command line gives a meaning to, and no space (a space splits words: a value could add
 * an argument or a command). Names and host names have rules of their own, stricter still.
 */
export const SAFE_TEXT = /^[A-Za-z0-9._,:/+@=%-]*$/;
const SAFE_TEXT_HINT = "letters, digits and . _ , : / + @ = % - (no spaces, quotes, #, (, ), $, ;, &, |, `, backslashes or line breaks: the value goes into scripts)";

/** What a booting machine reports (serial, manufacturer, product) is kept only in these characters. */
const REPORTED_TEXT_UNSAFE = /[^A-Za-z0-9._:-]/g;
/** A reported value is cut to this many characters: enough for any SMBIOS string worth showing. */
export const REPORTED_TEXT_MAX = 64;

/**
 * A value a booting machine reported, reduced to what is inert in any script: every other
 * character (spaces too) becomes '_', the result is cut to REPORTED_TEXT_MAX; null when nothing
 * but '_' is left (no information). "Dell Inc." is kept as "Dell_Inc.".
 */
export function reportedText(value: string | undefined): string | null {
	if (value === undefined) return null;
	const text = value.trim().replace(REPORTED_TEXT_UNSAFE, "_").slice(0, REPORTED_TEXT_MAX);
	return /^_*$/.test(text) ? null : text;
}

type Problems = { type: string; actual: unknown; message?: string }[];

/** fastest-validator rule with a custom check that names the field in its message. */
function checked(field: string, base: Record<string, unknown>, check: (value: string) => string | null) {
	return {
		...base,
		custom: (value: unknown, errors: Problems) => {
			if (typeof value !== "string" || value === "") return value;
			const reason = check(value);
			if (reason) errors.push({ type: field, actual: "(refused)", message: `The '${field}' field ${reason}.` });
			return value;
		},
	};
}

export function normalizeMac(value: string): string | null {
	const text = value.trim();
	if (!MAC_INPUT.test(text)) return null;
	const mac = text.toLowerCase().replace(/-/g, ":");
	return mac === "00:00:00:00:00:00" || mac === "ff:ff:ff:ff:ff:ff" ? null : mac;
}

export function normalizeUuid(value: string): string | null {
	const text = value.trim();
	return UUID_INPUT.test(text) ? text.toLowerCase() : null;
}

const MAC_REASON = "must be a MAC address like aa:bb:cc:dd:ee:ff (not all zeros nor broadcast)";

export const MAC_PARAM = checked("mac", { type: "string", max: 17, empty: false }, (v) => (normalizeMac(v) ? null : MAC_REASON));

export function macsParam(field = "macs") {
	return {
		type: "array",
		min: 1,
		max: MAX_MACS,
		items: { type: "string", max: 17 },
		custom: (value: unknown, errors: Problems) => {
			if (!Array.isArray(value)) return value;
			for (const item of value) {
				if (typeof item === "string" && !normalizeMac(item)) errors.push({ type: field, actual: "(refused)", message: `The '${field}' field has "${item.slice(0, 17)}", which ${MAC_REASON}.` });
			}
			return value;
		},
	};
}

export const UUID_PARAM = checked("uuid", { type: "string", max: 36 }, (v) => (normalizeUuid(v) ? null : "must be an SMBIOS UUID (8-4-4-4-12 hex digits)"));

export function safeTextParam(field: string, max = 128) {
	return checked(field, { type: "string", max }, (v) => (SAFE_TEXT.test(v) ? null : `may hold only ${SAFE_TEXT_HINT}`));
}

export const NAME_PARAM = checked("name", { type: "string", min: 1, max: 253, trim: true }, (v) => (/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v) ? null : "must be letters, digits, '.', '_' or '-', starting with a letter or digit"));
export const HOSTNAME_PARAM = checked("hostname", { type: "string", max: 253 }, (v) => (isHostName(v) ? null : "must be a DNS host name"));
export const BMC_ADDRESS_PARAM = checked("bmcAddress", { type: "string", max: 253 }, (v) =>
	IPV4_PATTERN.test(v) || net.isIPv6(v) || isHostName(v) ? null : "must be the BMC's host name or IP address",
);

/** labels: {key: "value"}; keys usable as template names, values safe in scripts. */
export function labelsParam(field = "labels") {
	return {
		type: "record",
		key: { type: "string", pattern: LABEL_KEY, messages: { stringPattern: `The '${field}' keys must be letters, digits, '_' or '-' (at most 63), starting with a letter or digit.` } },
		value: { type: "string", max: LABEL_VALUE_MAX },
		custom: (value: unknown, errors: Problems) => {
			if (!value || typeof value !== "object") return value;
			const entries = Object.entries(value as Record<string, unknown>);
			if (entries.length > MAX_LABELS) errors.push({ type: field, actual: entries.length, message: `The '${field}' field has ${entries.length} labels; at most ${MAX_LABELS}.` });
			for (const [key, label] of entries) {
				if (typeof label === "string" && !SAFE_TEXT.test(label)) errors.push({ type: field, actual: "(refused)", message: `The '${field}' field's "${key}" may hold only ${SAFE_TEXT_HINT}.` });
			}
			return value;
		},
	};
}

/** What an operator (or an import row) may set on a machine. localnodeId, lastSeen and the token are the provisioner's. */
export const MACHINE_PARAMS = {
	name: NAME_PARAM,
	macs: macsParam(),
	uuid: { ...UUID_PARAM, optional: true },
	serial: { ...safeTextParam("serial"), optional: true },
	manufacturer: { ...safeTextParam("manufacturer"), optional: true },
	product: { ...safeTextParam("product"), optional: true },
	arch: { type: "enum", values: [...ARCHITECTURES], optional: true },
	firmware: { type: "enum", values: [...FIRMWARES], optional: true },
	artifactId: { ...ARTIFACT_ID_PARAM, optional: true },
	labels: { ...labelsParam(), optional: true },
	hostname: { ...HOSTNAME_PARAM, optional: true },
	bmcProtocol: { type: "enum", values: [...BMC_PROTOCOLS], optional: true },
	bmcAddress: { ...BMC_ADDRESS_PARAM, optional: true },
	bmcPort: { ...PORT_PARAM, convert: true, optional: true },
	bmcUser: { ...safeTextParam("bmcUser", 64), optional: true },
	/** Sealed at rest; never listed, echoed, searched or sorted by. */
	bmcPassword: { type: "string", max: 256, optional: true },
	/** IPMI only: the RMCP+ cipher suite (ipmitool -C), for BMCs that do not answer ipmitool's question for the best one (each call then waits seconds). */
	bmcCipherSuite: { type: "number", integer: true, min: 0, max: 17, convert: true, optional: true },
	/** Redfish only: the SHA-256 of the BMC's (self-signed) certificate, pinned: 64 hex digits, colons allowed. */
	bmcCertificateSha256: { type: "string", max: 95, pattern: /^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$/, messages: { stringPattern: "The 'bmcCertificateSha256' field must be a SHA-256 fingerprint: 64 hex digits, colons allowed." }, optional: true },
	status: { type: "enum", values: [...MACHINE_STATUSES], optional: true },
	statusReason: { type: "string", max: 500, optional: true },
	/** A profile pinned on the machine (selectors are then not asked); 0 unpins. */
	profileId: { type: "number", integer: true, min: 0, convert: true, optional: true },
} as const;

/** Fields cleared by an empty string (an update cannot send null: the entity mixin refuses it). */
export const CLEARABLE = ["uuid", "serial", "manufacturer", "product", "arch", "firmware", "artifactId", "hostname", "bmcProtocol", "bmcAddress", "bmcUser", "bmcPassword", "bmcCertificateSha256", "statusReason"] as const;

/**
 * A BMC needs at least its protocol and address; user, password and port come with them. The
 * drivers' own rules (checkBmcFields: IPMI's 16-byte user and 20-byte password, no control
 * characters, a host name the driver can resolve) are checked here too, so a BMC that could never
 * be reached is refused when it is saved, not at its first power call. `password` is the clear
 * one when the request sets it (a stored one is sealed, and was checked when it was set).
 */
export function checkBmc(row: Record<string, unknown>, password?: unknown): void {
	const named = ["bmcAddress", "bmcPort", "bmcUser", "bmcPassword", "bmcCipherSuite", "bmcCertificateSha256"].filter((f) => row[f] !== null && row[f] !== undefined);
	if (named.length === 0 && !row.bmcProtocol) return;
	if (!row.bmcProtocol) invalid("bmcProtocol", `is required with ${named.join(", ")}: ipmi or redfish`);
	if (!row.bmcAddress) invalid("bmcAddress", `is required with bmcProtocol ${String(row.bmcProtocol)}`);
	const protocol = row.bmcProtocol as string;
	// A value not given is not checked: a stand-in every rule takes.
	const fields = {
		protocol: protocol as "ipmi" | "redfish",
		address: row.bmcAddress as string,
		port: (row.bmcPort as number | null) ?? defaultBmcPort(protocol),
		user: typeof row.bmcUser === "string" && row.bmcUser ? row.bmcUser : "x",
		password: typeof password === "string" && password ? password : "x",
		certificateSha256: (row.bmcCertificateSha256 as string | null) ?? null,
	};
	try {
		checkBmcFields(fields);
	} catch (err) {
		if (!(err instanceof InvalidInputError)) throw err;
		throw new InvalidInputError((err.data as FieldProblem[]).map((p) => ({ ...p, field: BMC_FIELD_NAMES[p.field] ?? p.field })));
	}
}

/** checkBmcFields' field names as the machines API spells them. */
const BMC_FIELD_NAMES: Record<string, string> = {
	"bmc.protocol": "bmcProtocol",
	"bmc.address": "bmcAddress",
	"bmc.port": "bmcPort",
	"bmc.user": "bmcUser",
	"bmc.password": "bmcPassword",
	"bmc.certificateSha256": "bmcCertificateSha256",
};

/** The port a BMC of `protocol` answers on when none is set. */
export function defaultBmcPort(protocol: string): number {
	return protocol === "redfish" ? 443 : 623;
}
