import { exec, requireBinary } from "../exec";
import { pollPowerState } from "./settle";
import { BmcError, bmcLabel, type Bmc, type BmcFields, type BmcOptions, type BootDevice, type PowerAction, type PowerState } from "./types";

/** ipmitool's own bound: seconds between retries (-N) and how many (-R) before it gives up on a silent BMC. */
const RETRY_INTERVAL_SECONDS = 1;
const RETRIES = 3;

/** What ipmitool prints (with -v) when the BMC refused the user or password, as opposed to not answering. */
const AUTH_REFUSED = [/RAKP 2 HMAC is invalid/i, /unauthorized name/i, /invalid user ?name/i, /insufficient privilege/i, /RAKP \d message indicates an error/i];
const NO_ANSWER = [/Get Auth Capabilities error/i, /No response from remote controller/i, /Error issuing Get Channel Authentication Capabilities/i];
const BOOT_PARAMETER_REFUSED = /Set Chassis Boot Parameter \d+ failed: ([^\n]*)/;

/**
 * IPMI over LAN (RMCP+, `-I lanplus`) through Debian's ipmitool. The password reaches ipmitool only
 * in its environment (`-E` reads IPMI_PASSWORD), never on its command line, where any local user
 * could read it in /proc/<pid>/cmdline; arguments are an array, so no field reaches a shell.
 */
export class IpmiBmc implements Bmc {
	private readonly label: string;

	constructor(
		private readonly fields: BmcFields,
		private readonly options: BmcOptions = {},
	) {
		this.label = bmcLabel(fields);
	}

	async power(action: PowerAction): Promise<PowerState> {
		const deadline = Date.now() + (this.options.timeoutMs ?? 30_000);
		if (action === "status") return this.status(deadline);
		// A machine that is off is started by a cycle: a BMC may refuse to cycle what is not running.
		const command = action === "cycle" && (await this.status(deadline)) === "off" ? "on" : action;
		await this.ipmitool(["chassis", "power", command], deadline);
		const target: PowerState = action === "off" ? "off" : "on";
		return pollPowerState(() => this.status(deadline), target, Math.min(deadline, Date.now() + (this.options.settleMs ?? 10_000)));
	}

	async bootDevice(device: BootDevice, persistent: boolean): Promise<void> {
		const deadline = Date.now() + (this.options.timeoutMs ?? 30_000);
		const { stderr } = await this.ipmitool(["chassis", "bootdev", device, ...(persistent ? ["options=persistent"] : [])], deadline);
		// ipmitool exits 0 even when the BMC refuses the boot parameters: its message is the only sign.
		const refused = BOOT_PARAMETER_REFUSED.exec(stderr);
		if (refused) throw new BmcError(this.label, "boot-device-refused", `${device}${persistent ? " (persistent)" : ""}: ${refused[1]!.trim()}`, { device });
	}

	private async status(deadline: number): Promise<PowerState> {
		const { stdout } = await this.ipmitool(["chassis", "power", "status"], deadline);
		const state = /Chassis Power is (on|off)/i.exec(stdout);
		if (!state) throw new BmcError(this.label, "unexpected", `no power state in ipmitool's answer: ${lastLine(stdout)}`);
		return state[1]!.toLowerCase() as PowerState;
	}

	private async ipmitool(command: readonly string[], deadline: number): Promise<{ stdout: string; stderr: string }> {
		const remaining = deadline - Date.now();
		if (remaining <= 0) throw new BmcError(this.label, "timeout", "no time left for the call");
		const binary = this.options.ipmitool ?? requireBinary("ipmitool", "ipmitool");
		const result = await exec(binary, [...this.connectionArgs(), ...command], { timeout: remaining, env: { IPMI_PASSWORD: this.fields.password } });
		if (result.timedOut) throw new BmcError(this.label, "timeout", `no answer within ${Math.round(remaining / 1000)} s`);
		if (result.code === 127) throw new BmcError(this.label, "unexpected", `${binary} is not installed`);
		if (result.code !== 0) throw this.failure(result.stderr || result.stdout);
		return result;
	}

	private connectionArgs(): string[] {
		const { address, port, user } = this.fields;
		const cipher = this.options.cipherSuite === undefined ? [] : ["-C", String(this.options.cipherSuite)];
		// -v: only the verbose messages tell a refused password from a BMC that does not answer.
		return ["-I", "lanplus", "-H", address, "-p", String(port), "-U", user, "-E", "-N", String(RETRY_INTERVAL_SECONDS), "-R", String(RETRIES), ...cipher, "-v"];
	}

	private failure(output: string): BmcError {
		if (AUTH_REFUSED.some((pattern) => pattern.test(output))) return new BmcError(this.label, "auth", "user or password refused");
		if (NO_ANSWER.some((pattern) => pattern.test(output))) {
			return new BmcError(this.label, "timeout", `no IPMI answer after ${RETRIES + 1} tries ${RETRY_INTERVAL_SECONDS} s apart`);
		}
		const refused = BOOT_PARAMETER_REFUSED.exec(output);
		if (refused) return new BmcError(this.label, "boot-device-refused", refused[1]!.trim());
		return new BmcError(this.label, "unexpected", lastLine(output) || "ipmitool failed without a message");
	}
}

function lastLine(text: string): string {
	const lines = text.trim().split("\n").filter((line) => line && !/^Loading IANA PEN Registry/.test(line));
	return (lines.at(-1) ?? "").slice(0, 300);
}
