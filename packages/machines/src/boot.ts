import { createHash, randomBytes } from "node:crypto";
import type { Context } from "moleculer";
import { NotFoundError, configOf, rateKeyOf, respondText, type BootEventKind } from "@clusterplatform/core";
import { ipxeRefusal, shellRefusal, unknownMachineScript, type UnknownBoot } from "./boot-scripts";
import { ARCHITECTURES, MAC_PARAM, normalizeMac, normalizeUuid, safeTextParam } from "./fields";
import type { MachineMeta, MachineRow, MachinesThis } from "./machines";
import type { ProfileRow } from "./profiles";
import type { Selection } from "./selectors";
import type { TemplateField } from "./templates";

/*
 * The machine path's handlers behind /api/boot (declared in machines.ts): what a booting machine
 * is answered, what it is recorded as, and the steps of its boot it leaves on the timeline and,
 * while it is provisioning, on its status (provisioning.ts follows them).
 */

/** lastSeen is written at most this often per machine: a boot storm is not a write storm. */
const SEEN_EVERY_MS = 30_000;

/** MACs per lastSeen UPDATE (well below SQLite's and PostgreSQL's bound-parameter limits). */
const SEEN_CHUNK = 500;

/** The most MACs one `bootsSeen` call may carry (a gateway's second of cache hits). */
export const SEEN_BATCH_MAX = 10_000;

const TOKEN_PREFIX = "cpm_";
/** In a plan, where the post-boot script's token will be. */
export const TOKEN_PLACEHOLDER = "<registration token: made when the machine fetches its post-boot script>";

export function sha256(text: string): string {
	return createHash("sha256").update(text, "utf8").digest("hex");
}

/** The boot paths below /api/boot, each with the profile script it answers. */
const BOOT_SCRIPTS: Record<"kickstart" | "preboot" | "postboot", { field: TemplateField; step: BootEventKind }> = {
	kickstart: { field: "kickstart", step: "kickstart" },
	preboot: { field: "prebootScript", step: "script" },
	postboot: { field: "postbootScript", step: "script" },
};

/** What iPXE tells about a machine (`${buildarch}` and `${platform}` mapped to the inventory's words). */
export const BOOT_PARAMS = {
	mac: { ...MAC_PARAM, optional: true },
	uuid: { type: "string", max: 36, optional: true },
	serial: { ...safeTextParam("serial"), optional: true },
	manufacturer: { ...safeTextParam("manufacturer"), optional: true },
	product: { ...safeTextParam("product"), optional: true },
	arch: { type: "string", max: 16, pattern: /^[a-z0-9_]*$/, optional: true },
	platform: { type: "string", max: 16, pattern: /^[a-z0-9_]*$/, optional: true },
	$$strict: true,
};

/**
 * Set on the boot action's meta when its answer may be repeated from memory (the gateway's
 * machine-cache.ts): the machine is known and ready, its boot told nothing new and moved no status,
 * so the next boot gets the same bytes until a machine, profile or selector changes. `detail` is
 * what each repeat puts on the boot timeline.
 */
export interface BootRepeat {
	mac: string;
	detail: string;
}

type BootMeta = MachineMeta & { bootRepeat?: BootRepeat };

export interface BootFacts {
	uuid?: string;
	serial?: string;
	manufacturer?: string;
	product?: string;
	arch?: string;
	firmware?: string;
}

function factsOf(params: Record<string, string | undefined>): BootFacts {
	const facts: BootFacts = {};
	const uuid = params.uuid ? normalizeUuid(params.uuid) : null;
	// Boards without one report all zeros or all ones: no identity.
	if (uuid && !/^[0-]+$|^[f-]+$/.test(uuid)) facts.uuid = uuid;
	for (const name of ["serial", "manufacturer", "product"] as const) if (params[name]?.trim()) facts[name] = params[name]!.trim();
	if ((ARCHITECTURES as readonly string[]).includes(params.arch ?? "")) facts.arch = params.arch;
	if (params.platform === "pcbios") facts.firmware = "bios";
	if (params.platform === "efi") facts.firmware = "uefi";
	return facts;
}

export function missingMessage(machine: MachineRow, profile: ProfileRow, field: TemplateField, missing: string[]): string {
	return `profile "${profile.name}": its ${field} names ${missing.map((n) => `{{${n}}}`).join(", ")}, which machine ${machine.id} (${machine.name}) does not have`;
}

/** The machines service's boot-path methods (a mixin's methods: `this` is the machines service). */
export const bootPathMethods = {
		/** GET /api/boot: the machine's iPXE script, the default for one without a profile, or a script saying why not. */
		async bootAnswer(this: MachinesThis, ctx: Context<Record<string, string>, BootMeta>): Promise<string> {
			const mac = normalizeMac(ctx.params.mac)!;
			const facts = factsOf(ctx.params);
			const baseUrl: string = configOf(this.broker).publicUrl;
			const choice: UnknownBoot = configOf(this.broker).machines.unknownBoot;
			let machine: MachineRow | null = await this.machineByMac(mac);
			if (!machine) {
				machine = await this.discover(ctx, mac, facts);
				this.recordStep(ctx, mac, "script", machine ? `discovered as machine ${machine.id}` : "unknown machine (not recorded: too many from this address)");
				return unknownMachineScript(choice, mac, baseUrl, "not in the inventory");
			}
			const told = await this.seen(machine, facts);
			// Only an answer the next boot would get unchanged, with no status to move, may be answered from the gateway's memory.
			const repeatable = machine.status === "ready" && !told;
			let chosen: { selection: Selection | null; profile: ProfileRow } | { why: string };
			try {
				chosen = await this.selectionOf(ctx, machine);
			} catch (err) {
				this.recordStep(ctx, mac, "script", `boot error: ${(err as Error).message}`);
				return ipxeRefusal(`${mac}: the provisioner cannot choose a profile now (${(err as Error).message})`);
			}
			if ("why" in chosen) {
				const detail = `machine ${machine.id}: ${chosen.why}; default ${choice}`;
				this.recordStep(ctx, mac, "script", detail);
				if (repeatable) ctx.meta.bootRepeat = { mac, detail };
				return unknownMachineScript(choice, mac, baseUrl, chosen.why);
			}
			const { selection, profile } = chosen;
			const result = this.renderedScript(profile, "ipxeScript", this.viewOf(machine, mac, profile, null));
			if ("missing" in result) return this.bootFailed(ctx, machine, mac, missingMessage(machine, profile, "ipxeScript", result.missing), "ipxe");
			const chosenBy = selection ? `selector "${selection.selector.name}"` : "pinned on the machine";
			await this.provisioning.stepSeen(machine, `fetched its iPXE script from ${mac} (profile "${profile.name}", ${chosenBy})`, true);
			const detail = `machine ${machine.id}: profile "${profile.name}" (${chosenBy})`;
			this.recordStep(ctx, mac, "script", detail);
			if (repeatable) ctx.meta.bootRepeat = { mac, detail };
			return result.text;
		},
		/** GET /api/boot/<kickstart|preboot|postboot>: the profile's script for the machine with this MAC. */
		async scriptAnswer(this: MachinesThis, ctx: Context<{ mac: string }, MachineMeta>, kind: keyof typeof BOOT_SCRIPTS): Promise<string> {
			const { field, step } = BOOT_SCRIPTS[kind];
			const mac = normalizeMac(ctx.params.mac)!;
			const machine: MachineRow | null = await this.machineByMac(mac);
			if (!machine) throw new NotFoundError("machine with MAC", mac);
			const chosen = await this.selectionOf(ctx, machine);
			if ("why" in chosen) throw new NotFoundError(`${kind} script (${chosen.why}) of machine`, machine.id);
			const { profile } = chosen;
			if (!profile[field]) throw new NotFoundError(`${kind} script of profile "${profile.name}" for machine`, machine.id);
			// The check runs with a stand-in token: a script that cannot be rendered uses up none.
			const check = this.renderedScript(profile, field, this.viewOf(machine, mac, profile, kind === "postboot" ? TOKEN_PLACEHOLDER : null));
			if ("missing" in check) return this.bootFailed(ctx, machine, mac, missingMessage(machine, profile, field, check.missing), kind);
			const token = kind === "postboot" ? await this.newToken(machine.id) : null;
			const result = this.renderedScript(profile, field, this.viewOf(machine, mac, profile, token));
			await this.provisioning.stepSeen(machine, `fetched its ${kind} script from ${mac} (profile "${profile.name}")`, false);
			this.recordStep(ctx, mac, step, `machine ${machine.id}: ${kind} of profile "${profile.name}"`);
			return respondText(ctx, (result as { text: string }).text);
		},
		/** The machine cannot boot what its profile says: a script that says why, the reason on its status and timeline. */
		async bootFailed(this: MachinesThis, ctx: Context<unknown, MachineMeta>, machine: MachineRow, mac: string, reason: string, kind: string): Promise<string> {
			await this.setStatusOf(machine.id, "failed", reason);
			this.recordStep(ctx, mac, kind === "kickstart" ? "kickstart" : "script", `boot error: ${reason}`);
			if (kind === "ipxe") return ipxeRefusal(reason);
			if (kind === "kickstart") {
				// Anaconda shows the HTTP error; the body says why.
				ctx.meta.$statusCode = 409;
				return respondText(ctx, `${reason}\n`);
			}
			return respondText(ctx, shellRefusal(reason));
		},
		/** A MAC the inventory does not know: recorded as discovered (bounded per address), with what iPXE told. */
		async discover(this: MachinesThis, ctx: Context<unknown, MachineMeta>, mac: string, facts: BootFacts): Promise<MachineRow | null> {
			if (this.discoveries.take(rateKeyOf(ctx.meta.remoteAddress)) > 0) return null;
			const row = { name: `discovered-${mac.replace(/:/g, "")}`, macs: mac, labels: {}, ...facts, status: "discovered", statusReason: `first booted ${new Date().toISOString()} from ${ctx.meta.remoteAddress ?? "an unknown address"}`, lastSeen: new Date() };
			try {
				await this.writeNew([row], "");
			} catch (err) {
				// The same machine's other request won the race, or an operator's machine took the name.
				if ((err as Error).name !== "ConflictError") throw err;
			}
			this.broker.broadcast("cache.clean.machines");
			return this.machineByMac(mac);
		},
		/** A known machine booted: lastSeen (at most every SEEN_EVERY_MS), and what iPXE told where the inventory had nothing. True when that changed a fact. */
		async seen(this: MachinesThis, machine: MachineRow, facts: BootFacts): Promise<boolean> {
			const changes: Record<string, unknown> = {};
			for (const [name, value] of Object.entries(facts)) {
				const current = machine[name as keyof MachineRow];
				// A discovered machine keeps what it last told; an operator's machine only gains what it lacked.
				if (machine.status === "discovered" ? current !== value : current === null) changes[name] = value;
			}
			const told = Object.keys(changes).length > 0;
			if (!told && machine.lastSeen && Date.now() - new Date(machine.lastSeen).getTime() < SEEN_EVERY_MS) return false;
			await this.adapter.model.update({ ...changes, lastSeen: new Date() }, { where: { id: machine.id } });
			return told;
		},
		/** Boots the gateway answered from memory (machine-cache.ts): their machines' lastSeen, in one UPDATE per chunk. */
		async markSeen(this: MachinesThis, macs: string[]): Promise<number> {
			let updated = 0;
			for (let at = 0; at < macs.length; at += SEEN_CHUNK) {
				const chunk = macs.slice(at, at + SEEN_CHUNK).map((mac) => normalizeMac(mac)).filter((mac): mac is string => mac !== null);
				const ids = await this.inventory.machineIdsByMacs(chunk);
				if (ids.length === 0) continue;
				const [count] = await this.adapter.model.update({ lastSeen: new Date() }, { where: { id: ids } });
				updated += count;
			}
			return updated;
		},
		async newToken(this: MachinesThis, id: number): Promise<string> {
			const token = `${TOKEN_PREFIX}${randomBytes(24).toString("base64url")}`;
			await this.adapter.model.update({ registrationTokenSha256: sha256(token) }, { where: { id } });
			return token;
		},
		recordStep(this: MachinesThis, ctx: Context<unknown, MachineMeta>, mac: string, kind: BootEventKind, detail: string) {
			const ip = ctx.meta.remoteAddress ?? null;
			if (this.stepsPerClient.take(rateKeyOf(ip)) > 0) return;
			this.bootEvents.record({ kind, ip, mac, artifactId: null, detail: detail.slice(0, 500) });
		},
};
