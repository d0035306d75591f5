import fs from "node:fs";
import path from "node:path";
import { ConfigError, permanentFailure, type BuildContext, type BuildResult, type Config } from "@clusterplatform/core";
import {
	DEBIAN_IPXE_DIR,
	EMBEDDED_DELIVERY,
	debianIpxeVersion,
	notAvailableWithoutSource,
	prebuiltFor,
	prebuiltPath,
	scriptDeliveryWithoutEmbedding,
} from "./prebuilt";
import { IpxeSourceTree, crossCompilerMissing } from "./source-tree";
import { DRIVERS, EXTENSIONS, PLATFORMS, artifactFileName, checkScript, checkTarget, type IpxeInputs, type Platform, type Target } from "./targets";

/**
 * Where scripts/setup installs iPXE's pinned release, and the object trees it prepares from it.
 * Outside the checkout: neither is ever committed.
 */
export const INSTALLED_IPXE = { sourceDir: "/opt/clusterplatform/ipxe", treesDir: "/opt/clusterplatform/ipxe-trees" };

/** Worker settings from the environment (IPXE_*); ConfigError names the bad variable. */
export interface IpxeWorkerSettings {
	/** An iPXE source tree to build from; null: serve Debian's prebuilt binaries. */
	sourceDir: string | null;
	/** Where prepared object trees live; null: under the data dir. */
	treesDir: string | null;
	/** Platforms whose object trees are prepared when the worker starts (the rest on first use). */
	preparePlatforms: Platform[];
	/** make -j for source builds. */
	makeJobs: number;
}

/** Every platform this worker's compilers can build (arm64 needs the cross compiler). */
export function buildablePlatforms(): Platform[] {
	return PLATFORMS.filter((platform) => !crossCompilerMissing(platform));
}

/**
 * What the worker builds with, from its Config: IPXE_SOURCE_DIR names a source tree, or "none" for
 * Debian's prebuilt binaries; unset, the tree setup installed is used when it is there.
 * IPXE_PREPARE_PLATFORMS (default: every buildable platform, when building from source) and
 * IPXE_TREES_DIR (default: setup's beside its tree, otherwise the data dir) say what is prepared where.
 */
export function ipxeWorkerSettings(config: Pick<Config, "ipxe">, installed = INSTALLED_IPXE): IpxeWorkerSettings {
	const named = config.ipxe.sourceDir;
	const installedPresent = fs.existsSync(path.join(installed.sourceDir, "src", "Makefile"));
	const sourceDir = named === "none" ? null : named || (installedPresent ? installed.sourceDir : null);
	const isInstalled = sourceDir !== null && path.resolve(sourceDir) === path.resolve(installed.sourceDir);
	const treesDir = config.ipxe.treesDir || (isInstalled ? installed.treesDir : null);
	const preparePlatforms = config.ipxe.preparePlatforms ?? (sourceDir ? buildablePlatforms() : []);
	for (const platform of preparePlatforms) {
		if (!(PLATFORMS as readonly string[]).includes(platform)) throw new ConfigError(`IPXE_PREPARE_PLATFORMS: unknown platform "${platform}"; one of ${PLATFORMS.join(", ")}`);
	}
	if (preparePlatforms.length && !sourceDir) throw new ConfigError("IPXE_PREPARE_PLATFORMS needs IPXE_SOURCE_DIR");
	return { sourceDir, treesDir, preparePlatforms: preparePlatforms as Platform[], makeJobs: config.ipxe.makeJobs };
}

const sourceTrees = new Map<string, IpxeSourceTree>();

/** One IpxeSourceTree per checkout and data dir, so concurrent jobs share its preparations. */
export function sourceTreeFor(settings: IpxeWorkerSettings & { sourceDir: string }, config: Pick<Config, "dataDir">): IpxeSourceTree {
	const treesDir = settings.treesDir ?? path.join(config.dataDir, "ipxe-trees");
	const key = JSON.stringify([path.resolve(settings.sourceDir), treesDir, settings.makeJobs]);
	let tree = sourceTrees.get(key);
	if (!tree) {
		tree = new IpxeSourceTree(settings.sourceDir, treesDir, settings.makeJobs);
		sourceTrees.set(key, tree);
	}
	return tree;
}

/** Source tree: a real build with the script embedded. Progress: 10 tree ready, 50 make running, 90 built. */
async function buildFromSource(ctx: BuildContext<IpxeInputs>, target: Target, tree: IpxeSourceTree): Promise<BuildResult> {
	const file = await tree.build(target, ctx.inputs.script, ctx.workDir, { signal: ctx.signal, progress: ctx.progress, logger: ctx.logger });
	await ctx.progress(90);
	return {
		file,
		fields: { embedded: true, scriptDelivery: EMBEDDED_DELIVERY, toolchain: `iPXE source tree (fingerprint ${await tree.fingerprint()}): make ${target.platform}/${artifactFileName(target)} EMBED=script` },
	};
}

/** No source tree: Debian's file as it is, and the row says the script is not in it. */
async function serveDebianPrebuilt(ctx: BuildContext<IpxeInputs>, target: Target): Promise<BuildResult> {
	const choice = prebuiltFor(target);
	if (!choice) permanentFailure(notAvailableWithoutSource(target));
	const file = await prebuiltPath(choice);
	if (!file) permanentFailure(`${DEBIAN_IPXE_DIR}/${choice.file} is missing: install Debian's ipxe package (apt-get install ipxe) or set IPXE_SOURCE_DIR`);
	await ctx.progress(90);
	return {
		file,
		fields: {
			embedded: false,
			scriptDelivery: scriptDeliveryWithoutEmbedding(target.extension),
			toolchain: `${await debianIpxeVersion()}: ${DEBIAN_IPXE_DIR}/${choice.file}${choice.substitute ? ` (${choice.substitute})` : ""}`,
		},
	};
}

export async function buildIpxe(ctx: BuildContext<IpxeInputs>): Promise<BuildResult> {
	// Checked again here: a job's inputs may come from a queue other code can write to.
	checkScript(ctx.inputs.script);
	const target: Target = { platform: ctx.inputs.platform, driver: ctx.inputs.driver, extension: ctx.inputs.extension };
	for (const [field, allowed] of [["platform", PLATFORMS], ["driver", DRIVERS], ["extension", EXTENSIONS]] as const) {
		if (!(allowed as readonly string[]).includes(target[field])) permanentFailure(`${field}: not an allowed value`);
	}
	checkTarget(target);
	await ctx.progress(5);
	const settings = ipxeWorkerSettings(ctx.config);
	return settings.sourceDir
		? buildFromSource(ctx, target, sourceTreeFor({ ...settings, sourceDir: settings.sourceDir }, ctx.config))
		: serveDebianPrebuilt(ctx, target);
}

/** What a platform's tree is prepared with when warmed up at start (its most used target). */
export function defaultTarget(platform: Platform): Target {
	if (platform === "bin" || platform === "bin-x86_64-pcbios") return { platform, driver: "ipxe", extension: "lkrn" };
	return { platform, driver: "ipxe", extension: "efi" };
}

