import { createHash, randomBytes } from "node:crypto";
import { Op } from "sequelize";
import type { Context } from "moleculer";
import { NotFoundError, configOf, invalid, rateKeyOf, respondText, type BootEventKind } from "@clusterplatform/core";
import { ipxeRefusal, shellRefusal, unknownMachineScript, type UnknownBoot } from "./boot-scripts";
import { ARCHITECTURES, MAC_PARAM, normalizeMac, normalizeUuid, reportedText } from "./fields";
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
	// Any text (firmware prints what it likes, spaces included): reduced to reportedText before it is kept.
	serial: { type: "string", max: 128, optional: true },
	manufacturer: { type: "string", max: 128, optional: true },
	product: { type: "string", max: 128, optional: true },
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
	for (const name of ["serial", "manufacturer", "product"] as const) {
		const text = reportedText(params[name]);
		if (text !== null) facts[name] = text;
	}
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
			const mac = normalizeMac(ctx.params.mac);
			if (!mac) invalid("mac", "must be a MAC address like aa:bb:cc:dd:ee:ff");
			const facts = factsOf(ctx.params);
			const baseUrl: string = configOf(this.broker).publicUrl;
			const choice: UnknownBoot = configOf(this.broker).machines.unknownBoot;
			let machine: MachineRow | null = await this.machineByMac(mac);
			if (!machine) {
				machine = await this.discover(ctx, mac, facts);
				this.recordStep(ctx, mac, "script", machine ? `discovered as machine ${machine.id}` : "unknown machine (not recorded: too many discoveries)");
				return unknownMachineScript(choice, mac, baseUrl, "not in the inventory");
			}
			await this.seen(machine, facts);
			// Only an answer the next boot would get unchanged, with no status to move, may be answered from the gateway's memory
			// (what a boot reports never changes a known machine, so it cannot change the answer).
			const repeatable = machine.status === "ready";
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
			const mac = normalizeMac(ctx.params.mac);
			if (!mac) invalid("mac", "must be a MAC address like aa:bb:cc:dd:ee:ff");
			const machine: MachineRow | null = await this.machineByMac(mac);
			if (!machine) throw new NotFoundError("machine with MAC", mac);
			if (kind === "postboot" && machine.status !== "provisioning") return this.noTokenNow(ctx, machine);
			const chosen = await this.selectionOf(ctx, machine);
			if ("why" in chosen) throw new NotFoundError(`${kind} script (${chosen.why}) of machine`, machine.id);
			const { profile } = chosen;
			if (!profile[field]) throw new NotFoundError(`${kind} script of profile "${profile.name}" for machine`, machine.id);
			// The check runs with a stand-in token: a script that cannot be rendered uses up none.
			const check = this.renderedScript(profile, field, this.viewOf(machine, mac, profile, kind === "postboot" ? TOKEN_PLACEHOLDER : null));
			if ("missing" in check) return this.bootFailed(ctx, machine, mac, missingMessage(machine, profile, field, check.missing), kind);
			const token = kind === "postboot" ? await this.newToken(machine.id) : null;
			if (kind === "postboot" && token === null) return this.noTokenNow(ctx, machine);
			const result = this.renderedScript(profile, field, this.viewOf(machine, mac, profile, token));
			await this.provisioning.stepSeen(machine, `fetched its ${kind} script from ${mac} (profile "${profile.name}")`, false);
			this.recordStep(ctx, mac, step, `machine ${machine.id}: ${kind} of profile "${profile.name}"`);
			return respondText(ctx, (result as { text: string }).text);
		},
		/** The machine cannot boot what its profile says: a script that says why, the reason on its status and timeline. */
		async bootFailed(this: MachinesThis, ctx: Context<unknown, MachineMeta>, machine: MachineRow, mac: string, reason: string, kind: string): Promise<string> {
			// Only from the status this request read: a registration or an operator in between wins.
			await this.setStatusOf(machine.id, "failed", reason, {}, machine.status);
			this.recordStep(ctx, mac, kind === "kickstart" ? "kickstart" : "script", `boot error: ${reason}`);
			if (kind === "ipxe") return ipxeRefusal(reason);
			if (kind === "kickstart") {
				// Anaconda shows the HTTP error; the body says why.
				ctx.meta.$statusCode = 409;
				return respondText(ctx, `${reason}\n`);
			}
			return respondText(ctx, shellRefusal(reason));
		},
		/**
		 * A MAC the inventory does not know: recorded as discovered, with what iPXE told (reduced to
		 * reportedText). Bounded per address, globally, and by MACHINES_DISCOVERED_MAX rows.
		 * No cache.clean: the gateway keeps only ready machines' answers, and a discovered row is
		 * not one and changes none of theirs (a MAC is one machine's: a new row takes no ready
		 * machine's MAC). Emptying the cache here would let one unknown MAC a second keep a boot
		 * storm's cache empty.
		 */
		async discover(this: MachinesThis, ctx: Context<unknown, MachineMeta>, mac: string, facts: BootFacts): Promise<MachineRow | null> {
			if (this.discoveries.take(rateKeyOf(ctx.meta.remoteAddress)) > 0) return null;
			if (this.discoveriesAll.take("all") > 0) return null;
			if (!(await this.roomToDiscover())) return null;
			const row = { name: `discovered-${mac.replace(/:/g, "")}`, macs: mac, labels: {}, ...facts, status: "discovered", statusReason: `first booted ${new Date().toISOString()} from ${ctx.meta.remoteAddress ?? "an unknown address"}`, lastSeen: new Date() };
			try {
				await this.writeNew([row], "");
			} catch (err) {
				// The same machine's other request won the race, or an operator's machine took the name.
				if ((err as Error).name !== "ConflictError") throw err;
			}
			return this.machineByMac(mac);
		},
		/** False (logged at most once a minute) when MACHINES_DISCOVERED_MAX discovered machines are recorded already. */
		async roomToDiscover(this: MachinesThis): Promise<boolean> {
			const max = configOf(this.broker).machines.discoveredMax;
			const count = await this.adapter.model.count({ where: { status: "discovered" } });
			if (count < max) return true;
			if (Date.now() - this.discoveryFullLoggedAt >= 60_000) {
				this.discoveryFullLoggedAt = Date.now();
				this.logger.warn(`${count} discovered machines recorded (MACHINES_DISCOVERED_MAX ${max}): unknown MACs get the default answer and are not recorded; adopt or remove discovered machines`);
			}
			return false;
		},
		/**
		 * A machine booted: lastSeen (at most every SEEN_EVERY_MS). What a boot reports is no proof
		 * (anyone on the boot LAN can say any MAC), so it never changes a known machine: only a
		 * discovered one's facts are refreshed (already reduced by factsOf); an operator adopting it
		 * makes them the machine's. No cache.clean: see discover.
		 */
		async seen(this: MachinesThis, machine: MachineRow, facts: BootFacts): Promise<void> {
			const changes: Record<string, unknown> = {};
			if (machine.status === "discovered") {
				for (const [name, value] of Object.entries(facts)) if (machine[name as keyof MachineRow] !== value) changes[name] = value;
			}
			const told = Object.keys(changes).length > 0;
			if (!told && machine.lastSeen && Date.now() - new Date(machine.lastSeen).getTime() < SEEN_EVERY_MS) return;
			// Conditional: an operator adopting it in between keeps what the operator saw.
			await this.adapter.model.update({ ...changes, lastSeen: new Date() }, { where: { id: machine.id, ...(told ? { status: "discovered" } : {}) } });
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
		/**
		 * A registration token, only while the machine is provisioning; it is good until the
		 * provisioning deadline (admitRegistration and linkLocalnode check both). Null when the machine moved on meanwhile.
		 */
		async newToken(this: MachinesThis, id: number): Promise<string | null> {
			const token = `${TOKEN_PREFIX}${randomBytes(24).toString("base64url")}`;
			const [changed] = await this.adapter.model.update({ registrationTokenSha256: sha256(token) }, { where: { id, status: "provisioning", provisionDeadline: { [Op.gt]: new Date() } } });
			return changed === 1 ? token : null;
		},
		/** A post-boot script asked for outside provisioning: 409, with a script that says why (no token is made). */
		noTokenNow(this: MachinesThis, ctx: Context<unknown, MachineMeta>, machine: MachineRow): string {
			ctx.meta.$statusCode = 409;
			const state = machine.status === "provisioning" ? "past its provisioning deadline" : `${machine.status}, not provisioning`;
			return respondText(ctx, shellRefusal(`machine ${machine.id} (${machine.name}) is ${state}: a post-boot script carries a registration token only while its machine is provisioning (POST /api/machines/${machine.id}/provision)`));
		},
		recordStep(this: MachinesThis, ctx: Context<unknown, MachineMeta>, mac: string, kind: BootEventKind, detail: string) {
			const ip = ctx.meta.remoteAddress ?? null;
			if (this.stepsPerClient.take(rateKeyOf(ip)) > 0) return;
			this.bootEvents.record({ kind, ip, mac, artifactId: null, detail: detail.slice(0, 500) });
		},
};
