import { Errors } from "moleculer";
import { BmcError, PORT_PARAM, bmcLabel, createBmc, invalid, type BmcFields, type BootDevice, type PowerAction, type PowerState } from "@clusterplatform/core";

/**
 * BMC calls carried out by a site's distributor: BMCs live on the site's network, like the hosts
 * they power, so the cluster reaches them only through the distributor of that site (the manager's
 * routed `distributors.bmc`). Nothing here is published over REST.
 */

/** Bound of one whole call (login, request, settle) unless the caller asks for less. */
export const BMC_TIMEOUT_MS = 30_000;
/** The manager waits longer than the worker's own bound, so a silent BMC is reported by name, not as a bus timeout. */
export const BMC_ROUTE_TIMEOUT_MS = 60_000;
const MAX_BMC_TIMEOUT_MS = 45_000;

/**
 * The call's params (the manager checks them too, before anything leaves the cluster). Credentials
 * are only length-checked here: their content is checked by core's checkBmcFields, whose 422 never
 * repeats the value.
 */
export const BMC_PARAMS = {
	protocol: { type: "enum", values: ["ipmi", "redfish"] },
	address: { type: "string", empty: false, max: 253 },
	port: PORT_PARAM,
	user: { type: "string", empty: false, max: 256 },
	password: { type: "string", empty: false, max: 256 },
	certificateSha256: { type: "string", optional: true, nullable: true, max: 95 },
	action: { type: "enum", values: ["on", "off", "cycle", "status", "bootdev"] },
	device: { type: "enum", values: ["pxe", "disk", "cdrom"], optional: true },
	persistent: { type: "boolean", optional: true, default: false },
	/** IPMI RMCP+ cipher suite (ipmitool -C); without it ipmitool asks the BMC, which some do not answer quickly. */
	cipherSuite: { type: "number", integer: true, min: 0, max: 17, optional: true },
	timeoutMs: { type: "number", integer: true, min: 1000, max: MAX_BMC_TIMEOUT_MS, optional: true },
	$$strict: true,
} as const;

export interface BmcCall extends BmcFields {
	action: PowerAction | "bootdev";
	device?: BootDevice;
	persistent?: boolean;
	cipherSuite?: number;
	timeoutMs?: number;
}

/** What a BMC call answers: the BMC it reached, and the power state it reports or the boot device it took. */
export type BmcAnswer = { bmc: string; power: PowerState } | { bmc: string; bootDevice: BootDevice; persistent: boolean };

/**
 * Carry out one BMC call. A BmcError (it names the protocol and address, never a credential) leaves
 * as a client error with its 502, type and data, so callers and the gateway see it as it is and
 * nothing retries it.
 */
export async function callBmc(call: BmcCall): Promise<BmcAnswer> {
	if (call.action === "bootdev" && !call.device) invalid("device", "is required for action bootdev (pxe, disk or cdrom)");
	const fields: BmcFields = { protocol: call.protocol, address: call.address, port: call.port, user: call.user, password: call.password, certificateSha256: call.certificateSha256 ?? null };
	const bmc = createBmc(fields, { timeoutMs: call.timeoutMs ?? BMC_TIMEOUT_MS, cipherSuite: call.cipherSuite });
	const label = bmcLabel(fields);
	try {
		if (call.action === "bootdev") {
			const persistent = call.persistent ?? false;
			await bmc.bootDevice(call.device!, persistent);
			return { bmc: label, bootDevice: call.device!, persistent };
		}
		return { bmc: label, power: await bmc.power(call.action) };
	} catch (err) {
		if (err instanceof BmcError) throw new Errors.MoleculerClientError(err.message, err.code, err.type, err.data);
		throw err;
	}
}
