import { Errors } from "moleculer";

export type PowerAction = "on" | "off" | "cycle" | "status";
/** What the BMC reports; a transition (Redfish's PoweringOn/PoweringOff) counts as where it is heading. */
export type PowerState = "on" | "off";
export type BootDevice = "pxe" | "disk" | "cdrom";

/** The narrow face every power driver offers; the machines service and the distributor need no more. */
export interface Bmc {
	/** Performs the action (none for "status") and answers the power state the BMC reports afterwards. */
	power(action: PowerAction): Promise<PowerState>;
	/** Sets the next boot (persistent: every boot) to a device. */
	bootDevice(device: BootDevice, persistent: boolean): Promise<void>;
}

/** A machine's BMC as the inventory holds it. */
export interface BmcFields {
	protocol: "ipmi" | "redfish";
	address: string;
	port: number;
	user: string;
	password: string;
	/** Redfish: SHA-256 of the BMC's DER certificate (hex, colons optional). */
	certificateSha256?: string | null;
}

export type BmcFailure = "unreachable" | "timeout" | "auth" | "certificate" | "boot-device-refused" | "unexpected";

const REASON_TEXT: Record<BmcFailure, string> = {
	unreachable: "unreachable",
	timeout: "did not answer in time",
	auth: "refused the credentials",
	certificate: "presented a certificate that is not trusted",
	"boot-device-refused": "refused the boot device",
	unexpected: "gave an unexpected answer",
};

/**
 * A BMC call that failed, naming the BMC and why. A 502 to the API's callers: the fault is upstream
 * (the BMC or the path to it), never in the request. Carries no credential.
 */
export class BmcError extends Errors.MoleculerError {
	readonly bmc: string;
	readonly reason: BmcFailure;

	constructor(bmc: string, reason: BmcFailure, detail: string, extra: Record<string, unknown> = {}) {
		super(`BMC ${bmc} ${REASON_TEXT[reason]}: ${detail}`, 502, `BMC_${reason.toUpperCase().replace(/-/g, "_")}`, { bmc, reason, ...extra });
		this.name = "BmcError";
		this.bmc = bmc;
		this.reason = reason;
	}
}

/** "ipmi 10.0.0.5:623": how errors and logs name a BMC. */
export function bmcLabel(fields: Pick<BmcFields, "protocol" | "address" | "port">): string {
	const host = fields.address.includes(":") ? `[${fields.address}]` : fields.address;
	return `${fields.protocol} ${host}:${fields.port}`;
}

/** Options of the drivers, not of the machine: bounds and tools. */
export interface BmcOptions {
	/** Bound on one whole call (login, request, settle), milliseconds. Default 30 s. */
	timeoutMs?: number;
	/** How long power(on|off|cycle) follows the reported state towards the target, milliseconds. Default 10 s. */
	settleMs?: number;
	/** IPMI: the ipmitool binary (default: found on PATH). */
	ipmitool?: string;
	/** IPMI: RMCP+ cipher suite (ipmitool -C); default: ipmitool chooses from what the BMC offers. */
	cipherSuite?: number;
}
