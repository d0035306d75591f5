import { checkBmcFields } from "./fields";
import { IpmiBmc } from "./ipmi";
import { RedfishBmc } from "./redfish";
import type { Bmc, BmcFields, BmcOptions } from "./types";

export { BmcError, bmcLabel } from "./types";
export type { Bmc, BmcFailure, BmcFields, BmcOptions, BootDevice, PowerAction, PowerState } from "./types";
export { checkBmcFields, displayFingerprint, normalizeFingerprint } from "./fields";

/**
 * The driver for a machine's BMC. Fields are checked first (a 422 naming `bmc.<field>`); nothing
 * is contacted until a method is called, and every call is bounded by `options.timeoutMs`.
 */
export function createBmc(fields: BmcFields, options: BmcOptions = {}): Bmc {
	const checked = checkBmcFields(fields);
	return checked.protocol === "ipmi" ? new IpmiBmc(checked, options) : new RedfishBmc(checked, options);
}
