import fsp from "node:fs/promises";
import path from "node:path";
import type { Context, ServiceBroker } from "moleculer";
import { Errors } from "moleculer";
import type { ModelAttributes } from "sequelize";
import { DataTypes, ID_PARAM, invalid, permanentFailure, storeFor, type Config, type ObjectStore } from "@clusterplatform/core";
import { fetchPublicUrl, urlProblem } from "./fetch-part";

/**
 * The parts of a hybrid ISO. Each is given either as a URL (`<part>Url`, as in the seed) or as the
 * id of a done row of the builder that makes it (`<part>Id`), never both.
 */
export interface IsoPart {
	/** The builder service whose rows `<part>Id` refers to. */
	service: "ipxes" | "grubs" | "syslinuxs";
	/** What the referenced artifact's file name must end with. */
	suffix: string;
	/** Path in the ISO tree; null for parts that are not files on the ISO (the MBR template, zips). */
	target: string | null;
	required: boolean;
	/** EFI binaries: the CPU their PE header must name (checked when the ISO is built). */
	efiArch?: EfiArch;
	/** ipxes parts given by id: the platforms whose rows fit (checked at POST). */
	platforms?: readonly string[];
}

/** UEFI architectures an ISO can carry a loader for: PE machine type and removable-media file name. */
export const EFI_ARCHES = {
	x64: { machine: 0x8664, loader: "BOOTX64.EFI" },
	ia32: { machine: 0x014c, loader: "BOOTIA32.EFI" },
	aa64: { machine: 0xaa64, loader: "BOOTAA64.EFI" },
} as const;
export type EfiArch = keyof typeof EFI_ARCHES;

export const ISO_PARTS = {
	ipxeUefi: { service: "ipxes", suffix: ".efi", target: "ipxe.efi", required: true, efiArch: "x64", platforms: ["bin-x86_64-efi"] },
	ipxeBios: { service: "ipxes", suffix: ".lkrn", target: "ipxe.lkrn", required: true },
	grubImg: { service: "grubs", suffix: "grub.img", target: "boot/grub.img", required: true },
	grubEfiX64: { service: "grubs", suffix: "grub.zip", target: null, required: false },
	grubEfiX86: { service: "grubs", suffix: "grub.zip", target: null, required: false },
	ldLinux: { service: "syslinuxs", suffix: "ldlinux.c32", target: "isolinux/ldlinux.c32", required: true },
	isolinuxBin: { service: "syslinuxs", suffix: "isolinux.bin", target: "isolinux/isolinux.bin", required: true },
	isohdpfxBin: { service: "syslinuxs", suffix: "isohdpfx.bin", target: null, required: true },
	// Optional UEFI loaders for the other architectures: iPXE itself is the removable-media loader
	// (GRUB's grub.cfg chainloads the x64 /ipxe.efi, and Debian has no arm64 GRUB for amd64 hosts).
	ipxeIa32: { service: "ipxes", suffix: ".efi", target: "EFI/BOOT/BOOTIA32.EFI", required: false, efiArch: "ia32", platforms: ["bin-i386-efi"] },
	ipxeArm64: { service: "ipxes", suffix: ".efi", target: "EFI/BOOT/BOOTAA64.EFI", required: false, efiArch: "aa64", platforms: ["bin-arm64-efi"] },
} as const satisfies Record<string, IsoPart>;
export type IsoPartName = keyof typeof ISO_PARTS;
export const PART_NAMES = Object.keys(ISO_PARTS) as IsoPartName[];

const MAX_URL = 2048;
const MAX_PART_BYTES = 256 * 1024 * 1024;

export const PART_FIELDS: ModelAttributes = Object.fromEntries(
	PART_NAMES.flatMap((part) => [
		[`${part}Url`, { type: DataTypes.STRING(MAX_URL), allowNull: true }],
		[`${part}Id`, { type: DataTypes.INTEGER, allowNull: true }],
	]),
);

/** The inputs naming the parts: `<part>Url` or `<part>Id` (null in a row where it was not given). */
export type PartInputs = { [Part in IsoPartName as `${Part}Url`]?: string | null } & { [Part in IsoPartName as `${Part}Id`]?: number | null };

export const PART_PARAMS: Record<string, unknown> = Object.fromEntries(
	PART_NAMES.flatMap((part) => [
		[`${part}Url`, { type: "string", optional: true, max: MAX_URL }],
		[`${part}Id`, { ...ID_PARAM, convert: false, optional: true }],
	]),
);

/** The builder row behind an id, as its manager reports it; 422s name the field. */
interface PartArtifact {
	status: string;
	key: string | null;
	error: string | null;
}

async function artifactOf(call: (action: string, params: { id: number }) => Promise<PartArtifact>, field: string, part: IsoPart, id: number) {
	let artifact: PartArtifact;
	try {
		artifact = await call(`${part.service}.artifact`, { id });
	} catch (err) {
		if (err instanceof Errors.ServiceNotFoundError) invalid(field, `the ${part.service} service is not running in this provisioner`);
		if ((err as { code?: number }).code === 404) invalid(field, `${part.service} ${id} does not exist`);
		throw err;
	}
	if (artifact.status !== "done" || !artifact.key) invalid(field, `${part.service} ${id} is ${artifact.status}, not done${artifact.error ? ` (${artifact.error})` : ""}`);
	if (!artifact.key.endsWith(part.suffix)) invalid(field, `${part.service} ${id} is ${path.basename(artifact.key)}, not a ${part.suffix}`);
	return artifact as { key: string };
}

/** POST-time checks: each part once (URL or id), URL schemes and literal addresses, ids done. */
export async function validateParts(inputs: PartInputs, ctx: Context | undefined, config: Config): Promise<void> {
	const store = storeFor(config);
	for (const name of PART_NAMES) {
		const part: IsoPart = ISO_PARTS[name];
		const url = inputs[`${name}Url`];
		const id = inputs[`${name}Id`];
		if (url !== undefined && id !== undefined) invalid(`${name}Id`, `give ${name}Url or ${name}Id, not both`);
		if (url === undefined && id === undefined) {
			if (part.required) invalid(`${name}Url`, `is required (or ${name}Id)`);
			continue;
		}
		if (url !== undefined && url !== null && store.keyOfUrl(url) === null) {
			const problem = urlProblem(url);
			if (problem) invalid(`${name}Url`, problem);
		}
		if (id !== undefined && id !== null && ctx) {
			await artifactOf((a, p) => ctx.call<PartArtifact, { id: number }>(a, p), `${name}Id`, part, id);
			if (part.platforms) await checkPlatform(ctx, `${name}Id`, part, id);
		}
	}
}

/** An iPXE row given for a UEFI loader must be built for that loader's CPU. */
async function checkPlatform(ctx: Context, field: string, part: IsoPart, id: number): Promise<void> {
	const row = await ctx.call<{ platform?: string }, { id: number }>(`${part.service}.get`, { id }, { meta: { accept: "application/json" } });
	if (row.platform !== undefined && !part.platforms!.includes(row.platform)) {
		invalid(field, `${part.service} ${id} is built for ${row.platform}, not ${part.platforms!.join(" or ")}`);
	}
}

/** The CPU a PE/COFF image is built for (its COFF machine field), or null when it is no PE image. */
export function peMachine(head: Buffer): number | null {
	if (head.length < 0x40 || head.toString("latin1", 0, 2) !== "MZ") return null;
	const pe = head.readUInt32LE(0x3c);
	if (pe + 6 > head.length || head.toString("latin1", pe, pe + 4) !== "PE\0\0") return null;
	return head.readUInt16LE(pe + 4);
}

const machineName = (machine: number) => Object.entries(EFI_ARCHES).find(([, a]) => a.machine === machine)?.[0] ?? `machine 0x${machine.toString(16)}`;

/** Build time: an EFI part (by id or any URL) must be a PE image for its architecture. */
export async function checkEfiBinary(name: IsoPartName, inputs: PartInputs, file: string): Promise<void> {
	const arch = (ISO_PARTS[name] as IsoPart).efiArch;
	if (!arch) return;
	const field = inputs[`${name}Id`] != null ? `${name}Id` : `${name}Url`;
	const handle = await fsp.open(file, "r");
	let head: Buffer;
	try {
		const buffer = Buffer.alloc(4096);
		const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
		head = buffer.subarray(0, bytesRead);
	} finally {
		await handle.close();
	}
	const machine = peMachine(head);
	if (machine === null) permanentFailure(`${field}: not an EFI (PE) image`);
	if (machine !== EFI_ARCHES[arch].machine) permanentFailure(`${field}: an EFI image for ${machineName(machine)}, not ${arch}`);
}

/** Inputs made only of store artifacts (by id or own URL) cannot change under us: cacheable. */
export function partsAreImmutable(inputs: PartInputs, config: Config): boolean {
	const store = storeFor(config);
	return PART_NAMES.every((name) => {
		const url = inputs[`${name}Url`];
		return url === undefined || url === null || store.keyOfUrl(url) !== null;
	});
}

/** Fetch one part to `file`: from the store when it is ours (id or own URL), else over http(s). */
export async function fetchPart(
	name: IsoPartName,
	inputs: PartInputs,
	file: string,
	env: { store: ObjectStore; broker: ServiceBroker; signal: AbortSignal },
): Promise<boolean> {
	const part: IsoPart = ISO_PARTS[name];
	const url = inputs[`${name}Url`];
	const id = inputs[`${name}Id`];
	if (id !== null && id !== undefined) {
		const field = `${name}Id`;
		const artifact = await artifactOf((a, p) => env.broker.call<PartArtifact, { id: number }>(a, p), field, part, id).catch((err) => {
			// The part changed since POST (deleted, or its service went away): retrying will not help.
			if (err instanceof Errors.MoleculerClientError) permanentFailure(err.message);
			throw err;
		});
		await env.store.download(artifact.key, file);
		return true;
	}
	if (url === null || url === undefined) return false;
	const key = env.store.keyOfUrl(url);
	if (key !== null) {
		if (!(await env.store.stat(key))) permanentFailure(`${name}Url: ${url} is not in the store (deleted?)`);
		await env.store.download(key, file);
		return true;
	}
	await fetchPublicUrl(`${name}Url`, url, file, { signal: env.signal, maxBytes: MAX_PART_BYTES, timeoutMs: 60_000 });
	return true;
}
