import type { Context } from "moleculer";
import { UnavailableError } from "@clusterplatform/core";
import { TOKEN_PLACEHOLDER, missingMessage } from "./boot";
import { unknownMachineScript, type UnknownBoot } from "./boot-scripts";
import type { MachineRow } from "./machines";
import type { ProfileRow } from "./profiles";
import type { Selection } from "./selectors";
import { SCRIPT_URLS, bareObject, missingValues, render, type TemplateField } from "./templates";

/*
 * What a machine boots: its profile (pinned, or the selectors' choice), the values its templates
 * see and its rendered scripts. The boot path answers with these; the plan shows them beforehand.
 */

export type Chosen = { selection: Selection | null; profile: ProfileRow } | { why: string };

/** Where the machine path is served, and what a machine without a profile gets. */
export interface PlanSettings {
	publicUrl: string;
	unknownBoot: UnknownBoot;
}

/** The machine's profile now: the winning selector and its profile, or why there is none. */
export async function selectionOf(ctx: Context, machine: MachineRow): Promise<Chosen> {
	if (machine.status === "discovered") return { why: "discovered, not adopted: an operator adopts it by setting its status (PUT /api/machines/:id {status: \"unknown\"})" };
	if (machine.profileId) {
		const pinned = await ctx.call<ProfileRow | null, { id: number }>("profiles.byId", { id: machine.profileId });
		return pinned ? { selection: null, profile: pinned } : { why: `its pinned profile ${machine.profileId} is gone` };
	}
	const facts = { macs: machine.macs, uuid: machine.uuid, artifactId: machine.artifactId, arch: machine.arch, firmware: machine.firmware, labels: machine.labels ?? {} };
	const selection = await ctx.call<Selection | null, object>("selectors.match", { machine: facts });
	if (!selection) return { why: "no selector matches it" };
	const profile = await ctx.call<ProfileRow | null, { id: number }>("profiles.byId", { id: selection.selector.profileId });
	if (!profile) return { why: `selector "${selection.selector.name}" names profile ${selection.selector.profileId}, which is gone` };
	return { selection, profile };
}

/** The values a machine's templates see (no prototype: a template finds only these). */
export function viewOf(baseUrl: string, machine: MachineRow, mac: string, profile: ProfileRow, token: string | null): Record<string, unknown> {
	// A normalized MAC (hex digits and colons) is URL-safe as it is, and the machine path matches it so.
	const urls: Record<string, string | undefined> = {};
	for (const [name, field] of Object.entries(SCRIPT_URLS)) urls[name] = profile[field] ? `${baseUrl}/api/boot/${mac}/${name.replace(/Url$/, "")}` : undefined;
	return bareObject({
		...profile.variables,
		id: machine.id,
		name: machine.name,
		mac,
		macs: machine.macs.join(" "),
		uuid: machine.uuid,
		serial: machine.serial,
		manufacturer: machine.manufacturer,
		product: machine.product,
		arch: machine.arch,
		firmware: machine.firmware,
		artifactId: machine.artifactId,
		hostname: machine.hostname,
		labels: bareObject(machine.labels ?? {}),
		baseUrl,
		bootUrl: `${baseUrl}/api/boot?mac=${mac}`,
		...urls,
		registrationToken: token,
		registerUrl: token && machine.artifactId ? `${baseUrl}/api/localnodes?artifactId=${encodeURIComponent(machine.artifactId)}&mac=${mac}&machineToken=${encodeURIComponent(token)}` : undefined,
	});
}

/** One script of the profile for the machine: its text, or the values the machine lacks for it. */
export function renderedScript(baseUrl: string, profile: ProfileRow, field: TemplateField, view: Record<string, unknown>): { text: string } | { missing: string[] } {
	if (field === "ipxeScript" && !profile.ipxeScript) {
		const [registry, id] = profile.mainscriptId ? ["mainscripts", profile.mainscriptId] : ["subscripts", profile.subscriptId];
		return { text: `#!ipxe\nchain ${baseUrl}/api/${registry}/${id}\n` };
	}
	const template = profile[field]!;
	const missing = missingValues(template, view);
	return missing.length ? { missing } : { text: render(template, view) };
}

/** What the machine would boot now, and why; the post-boot token is only a placeholder here. */
export async function planOf(ctx: Context, machine: MachineRow, settings: PlanSettings) {
	const chosen = await selectionOf(ctx, machine).catch((err: Error) => {
		if (err.name === "ServiceNotFoundError") throw new UnavailableError(`cannot plan: ${err.message}`);
		throw err;
	});
	const summary = { id: machine.id, name: machine.name, status: machine.status, statusReason: machine.statusReason };
	const mac = machine.macs[0]!;
	if ("why" in chosen) {
		const choice = settings.unknownBoot;
		return { machine: summary, profile: null, selector: null, why: `${chosen.why}: it gets the default for machines without a profile (MACHINES_UNKNOWN_BOOT=${choice})`, scripts: { ipxe: unknownMachineScript(choice, mac, settings.publicUrl, chosen.why) }, problems: [] };
	}
	const { selection, profile } = chosen;
	const view = viewOf(settings.publicUrl, machine, mac, profile, TOKEN_PLACEHOLDER);
	const why = selection
		? `selector "${selection.selector.name}" matches on ${selection.matchedOn.join(", ") || "everything (it names nothing)"}; specificity ${selection.selector.ranks.join(", ")} (identity, labels, site, hardware) is the highest of the ${selection.matching} selector(s) that match`
		: `profile ${profile.id} is pinned on the machine (profileId, set by a provision request or an operator): selectors are not asked`;
	const scripts: Record<string, string> = {};
	const problems: { script: string; missing: string[]; message: string }[] = [];
	for (const [name, field] of [["ipxe", "ipxeScript"], ["kickstart", "kickstart"], ["preboot", "prebootScript"], ["postboot", "postbootScript"]] as const) {
		if (field !== "ipxeScript" && !profile[field]) continue;
		const result = renderedScript(settings.publicUrl, profile, field, view);
		if ("text" in result) scripts[name] = result.text;
		else problems.push({ script: name, missing: result.missing, message: missingMessage(machine, profile, field, result.missing) });
	}
	return {
		machine: summary,
		profile: { id: profile.id, name: profile.name },
		selector: selection ? { id: selection.selector.id, name: selection.selector.name, ranks: selection.selector.ranks, matchedOn: selection.matchedOn } : null,
		why,
		scripts,
		problems,
	};
}
