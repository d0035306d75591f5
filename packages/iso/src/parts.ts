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
}

export const ISO_PARTS = {
	ipxeUefi: { service: "ipxes", suffix: ".efi", target: "ipxe.efi", required: true },
	ipxeBios: { service: "ipxes", suffix: ".lkrn", target: "ipxe.lkrn", required: true },
	grubImg: { service: "grubs", suffix: "grub.img", target: "boot/grub.img", required: true },
	grubEfiX64: { service: "grubs", suffix: "grub.zip", target: null, required: false },
	grubEfiX86: { service: "grubs", suffix: "grub.zip", target: null, required: false },
	ldLinux: { service: "syslinuxs", suffix: "ldlinux.c32", target: "isolinux/ldlinux.c32", required: true },
	isolinuxBin: { service: "syslinuxs", suffix: "isolinux.bin", target: "isolinux/isolinux.bin", required: true },
	isohdpfxBin: { service: "syslinuxs", suffix: "isohdpfx.bin", target: null, required: true },
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

export const PART_PARAMS: Record<string, unknown> = Object.fromEntries(
	PART_NAMES.flatMap((part) => [
		[`${part}Url`, { type: "string", optional: true, max: MAX_URL }],
		[`${part}Id`, { ...ID_PARAM, convert: false, optional: true }],
	]),
);

/** The builder row behind an id, as its manager reports it; 422s name the field. */
async function artifactOf(call: (action: string, params: unknown) => Promise<any>, field: string, part: IsoPart, id: number) {
	let artifact: { status: string; key: string | null; error: string | null };
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
export async function validateParts(inputs: Record<string, any>, ctx: Context | undefined, config: Config): Promise<void> {
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
		if (url !== undefined && store.keyOfUrl(url) === null) {
			const problem = urlProblem(url);
			if (problem) invalid(`${name}Url`, problem);
		}
		if (id !== undefined && ctx) await artifactOf((a, p) => ctx.call(a, p), `${name}Id`, part, id);
	}
}

/** Inputs made only of store artifacts (by id or own URL) cannot change under us: cacheable. */
export function partsAreImmutable(inputs: Record<string, any>, config: Config): boolean {
	const store = storeFor(config);
	return PART_NAMES.every((name) => {
		const url = inputs[`${name}Url`];
		return url === undefined || url === null || store.keyOfUrl(url) !== null;
	});
}

/** Fetch one part to `file`: from the store when it is ours (id or own URL), else over http(s). */
export async function fetchPart(
	name: IsoPartName,
	inputs: Record<string, any>,
	file: string,
	env: { store: ObjectStore; broker: ServiceBroker; signal: AbortSignal },
): Promise<boolean> {
	const part: IsoPart = ISO_PARTS[name];
	const url: string | null | undefined = inputs[`${name}Url`];
	const id: number | null | undefined = inputs[`${name}Id`];
	if (id !== null && id !== undefined) {
		const field = `${name}Id`;
		const artifact = await artifactOf((a, p) => env.broker.call(a, p), field, part, id).catch((err) => {
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
