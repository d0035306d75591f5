import { RedfishHttp, type RedfishResponse } from "./redfish-http";
import { pollPowerState } from "./settle";
import { BmcError, bmcLabel, type Bmc, type BmcFields, type BmcOptions, type BootDevice, type PowerAction, type PowerState } from "./types";

const SERVICE_ROOT = "/redfish/v1/";
/** Bound on logging out once the call is over, even when the call used up its own time. */
const LOGOUT_MS = 3_000;

const BOOT_TARGET: Record<BootDevice, string> = { pxe: "Pxe", disk: "Hdd", cdrom: "Cd" };
/** ResetTypes that perform each action, most preferred first, chosen among the system's AllowableValues. */
const RESET_TYPES: Record<"on" | "off" | "cycle", readonly string[]> = {
	on: ["On", "ForceOn"],
	off: ["ForceOff"],
	cycle: ["ForceRestart", "PowerCycle"],
};
const POWER_STATE: Record<string, PowerState> = { On: "on", PoweringOn: "on", Paused: "on", Off: "off", PoweringOff: "off" };

interface ComputerSystem {
	path: string;
	etag: string | undefined;
	powerState: PowerState;
	resetTarget: string;
	resetTypes: readonly string[] | undefined;
	bootTargets: readonly string[] | undefined;
}

/** One logged-in conversation with the BMC: its token goes on every request, and it ends with a logout. */
interface Session {
	http: RedfishHttp;
	headers: Record<string, string>;
	systemsPath: string;
}

/**
 * Redfish over HTTPS: the one ComputerSystem of /redfish/v1/Systems, ComputerSystem.Reset, and
 * Boot.BootSourceOverrideTarget written with the ETag read just before (If-Match). Each call logs in
 * (SessionService) and logs out again, so no token outlives it.
 */
export class RedfishBmc implements Bmc {
	private readonly label: string;

	constructor(
		private readonly fields: BmcFields,
		private readonly options: BmcOptions = {},
	) {
		this.label = bmcLabel(fields);
	}

	power(action: PowerAction): Promise<PowerState> {
		return this.withSession(async (session, deadline) => {
			const system = await this.system(session);
			if (action === "status") return system.powerState;
			// A machine that is off is started by a cycle: a restart of a system that is off does nothing.
			const effective = action === "cycle" && system.powerState === "off" ? "on" : action;
			await this.reset(session, system, effective);
			const target: PowerState = action === "off" ? "off" : "on";
			const until = Math.min(deadline, Date.now() + (this.options.settleMs ?? 10_000));
			return pollPowerState(async () => (await this.system(session)).powerState, target, until);
		});
	}

	bootDevice(device: BootDevice, persistent: boolean): Promise<void> {
		return this.withSession(async (session) => {
			const target = BOOT_TARGET[device];
			const patch = { Boot: { BootSourceOverrideTarget: target, BootSourceOverrideEnabled: persistent ? "Continuous" : "Once" } };
			// A 412 means someone changed the system between our read and our write: read again, once.
			for (let attempt = 1; ; attempt++) {
				const system = await this.system(session);
				if (system.bootTargets && !system.bootTargets.includes(target)) {
					throw new BmcError(this.label, "boot-device-refused", `${target} is not among its boot targets (${bmcText(system.bootTargets.join(", "))})`, { device });
				}
				const ifMatch: Record<string, string> = system.etag ? { "if-match": system.etag } : {};
				const response = await session.http.request({ method: "PATCH", path: system.path, body: patch, headers: { ...session.headers, ...ifMatch } });
				if (response.status === 412 && attempt < 2) continue;
				if (response.status === 400) throw new BmcError(this.label, "boot-device-refused", `${target}: ${redfishMessage(response)}`, { device });
				this.expectSuccess(response, `PATCH ${bmcText(system.path)}`);
				return;
			}
		});
	}

	private async withSession<T>(work: (session: Session, deadline: number) => Promise<T>): Promise<T> {
		const deadline = Date.now() + (this.options.timeoutMs ?? 30_000);
		const http = new RedfishHttp(this.fields, this.label, deadline);
		const root = await http.request({ method: "GET", path: SERVICE_ROOT });
		this.expectSuccess(root, `GET ${SERVICE_ROOT}`);
		const sessionsPath = http.pathOnBmc(odataId(root.body, ["Links", "Sessions"]) ?? "/redfish/v1/SessionService/Sessions", root.path);
		const systemsPath = http.pathOnBmc(odataId(root.body, ["Systems"]) ?? "/redfish/v1/Systems", root.path);
		const login = await http.request({ method: "POST", path: sessionsPath, body: { UserName: this.fields.user, Password: this.fields.password } });
		// Only the status: some BMCs quote the refused property, the password, in their message.
		this.expectSuccess(login, `POST ${bmcText(sessionsPath)}`, false);
		const token = headerValue(login.headers["x-auth-token"]);
		if (!token) throw new BmcError(this.label, "unexpected", "the session login answered no X-Auth-Token");
		const headers = { "x-auth-token": token };
		const location = headerValue(login.headers.location) ?? odataId(login.body, []);
		try {
			return await work({ http, headers, systemsPath }, deadline);
		} finally {
			if (location) await this.logout(location, login.path, headers);
		}
	}

	/** Best effort with a bound of its own: a session left behind expires on the BMC by itself. */
	private async logout(location: string, base: string, headers: Record<string, string>): Promise<void> {
		const http = new RedfishHttp(this.fields, this.label, Date.now() + LOGOUT_MS);
		try {
			await http.request({ method: "DELETE", path: http.pathOnBmc(location, base), headers });
		} catch {
			// the call's own outcome is what the caller needs; the session times out on the BMC
		}
	}

	private async system(session: Session): Promise<ComputerSystem> {
		const collection = await session.http.request({ method: "GET", path: session.systemsPath, headers: session.headers });
		this.expectSuccess(collection, `GET ${bmcText(session.systemsPath)}`);
		const members = Array.isArray(collection.body?.Members) ? (collection.body.Members as unknown[]) : [];
		if (members.length !== 1) throw new BmcError(this.label, "unexpected", `${bmcText(session.systemsPath)} lists ${members.length} systems; one is expected`);
		const memberId = odataId(members[0], []);
		if (!memberId) throw new BmcError(this.label, "unexpected", `${bmcText(session.systemsPath)}: a member without @odata.id`);
		const path = session.http.pathOnBmc(memberId, collection.path);
		const response = await session.http.request({ method: "GET", path, headers: session.headers });
		this.expectSuccess(response, `GET ${bmcText(path)}`);
		return this.parseSystem(response, session.http);
	}

	private parseSystem(response: RedfishResponse, http: RedfishHttp): ComputerSystem {
		const body = response.body ?? {};
		const powerState = POWER_STATE[String(body.PowerState)];
		if (!powerState) throw new BmcError(this.label, "unexpected", `unknown PowerState ${bmcText(JSON.stringify(body.PowerState) ?? "undefined")}`);
		const reset = objectAt(body, ["Actions", "#ComputerSystem.Reset"]);
		const resetTarget = typeof reset?.target === "string" ? reset.target : undefined;
		if (!resetTarget) throw new BmcError(this.label, "unexpected", `${bmcText(response.path)} offers no #ComputerSystem.Reset action`);
		const boot = objectAt(body, ["Boot"]);
		return {
			path: response.path,
			etag: headerValue(response.headers.etag) ?? (typeof body["@odata.etag"] === "string" ? body["@odata.etag"] : undefined),
			powerState,
			resetTarget: http.pathOnBmc(resetTarget, response.path),
			resetTypes: stringList(reset?.["ResetType@Redfish.AllowableValues"]),
			bootTargets: stringList(boot?.["BootSourceOverrideTarget@Redfish.AllowableValues"]),
		};
	}

	private async reset(session: Session, system: ComputerSystem, action: "on" | "off" | "cycle"): Promise<void> {
		const preferred = RESET_TYPES[action];
		// A BMC that lists no AllowableValues accepts the schema's values; the first preference is one.
		const resetType = system.resetTypes ? preferred.find((type) => system.resetTypes!.includes(type)) : preferred[0];
		if (!resetType) {
			throw new BmcError(this.label, "unexpected", `offers no ResetType for ${action} (it offers ${bmcText(system.resetTypes!.join(", ")) || "none"})`);
		}
		const response = await session.http.request({ method: "POST", path: system.resetTarget, body: { ResetType: resetType }, headers: session.headers });
		this.expectSuccess(response, `${resetType} (POST ${bmcText(system.resetTarget)})`);
	}

	/** Throws unless 2xx; `withMessage` false keeps the BMC's own words out (the login's). */
	private expectSuccess(response: RedfishResponse, what: string, withMessage = true): void {
		if (response.status >= 200 && response.status < 300) return;
		if (response.status === 401 || response.status === 403) throw new BmcError(this.label, "auth", `${what}: HTTP ${response.status}`);
		throw new BmcError(this.label, "unexpected", `${what}: HTTP ${response.status}${response.body && withMessage ? ` ${redfishMessage(response)}` : ""}`);
	}
}

function objectAt(value: unknown, keys: readonly string[]): Record<string, unknown> | undefined {
	let current = value;
	for (const key of keys) {
		if (current === null || typeof current !== "object") return undefined;
		current = (current as Record<string, unknown>)[key];
	}
	return current !== null && typeof current === "object" && !Array.isArray(current) ? (current as Record<string, unknown>) : undefined;
}

function odataId(value: unknown, keys: readonly string[]): string | undefined {
	const id = objectAt(value, keys)?.["@odata.id"];
	return typeof id === "string" ? id : undefined;
}

function stringList(value: unknown): readonly string[] | undefined {
	return Array.isArray(value) && value.every((item) => typeof item === "string") ? value : undefined;
}

function headerValue(value: string | string[] | undefined): string | undefined {
	return Array.isArray(value) ? value[0] : value || undefined;
}

/** The BMC's own words for a refusal (Redfish error body), cut short. */
function redfishMessage(response: RedfishResponse): string {
	const error = objectAt(response.body, ["error"]);
	const extended = Array.isArray(error?.["@Message.ExtendedInfo"]) ? (error["@Message.ExtendedInfo"] as unknown[]) : [];
	const first = objectAt(extended, ["0"]);
	const message = first?.Message ?? error?.message ?? `HTTP ${response.status}`;
	return bmcText(String(message));
}

/** The most of any BMC-given text an error carries: errors reach API bodies, logs and statusReason. */
export const BMC_TEXT_MAX = 100;

/** Text a BMC chose (messages, paths, values), as an error may carry it: no control characters, at most BMC_TEXT_MAX. */
export function bmcText(text: string): string {
	const clean = text.replace(/[\u0000-\u001f\u007f]/g, " ");
	return clean.length > BMC_TEXT_MAX ? `${clean.slice(0, BMC_TEXT_MAX)}…` : clean;
}
