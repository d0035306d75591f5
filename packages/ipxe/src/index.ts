import fs from "node:fs";
import type { ServiceSchema } from "moleculer";
import { ConfigError, DataTypes, builderManagerMixin, builderWorkerMixin, configOf, defineService, textParam, type BuilderSpec } from "@clusterplatform/core";
import { buildIpxe, defaultTarget, ipxeWorkerSettings, sourceTreeFor } from "./build";
import { DEBIAN_IPXE_DIR } from "./prebuilt";
import { IpxeSourceTree, type PlatformTreeState } from "./source-tree";
import { DRIVERS, EXTENSIONS, MAX_SCRIPT_BYTES, PLATFORMS, artifactFileName, checkScript, checkTarget, type IpxeInputs } from "./targets";

export * from "./targets";
export * from "./prebuilt";
export * from "./source-tree";
export * from "./build";

/** GET /api/ipxes/toolchain: how builds are made, and (from source) each platform's object tree. */
export interface IpxeToolchain {
	mode: "source" | "prebuilt";
	/** Whether scripts are compiled into the binaries. */
	embedded: boolean;
	source: string;
	fingerprint?: string;
	platforms: PlatformTreeState[];
}

/**
 * The ipxes entity, shared by manager and worker. Platform, driver and extension are allow-lists
 * and their combination is checked; the script is text that only ever goes into a file passed as
 * EMBED=<file>.
 */
export const IPXES: BuilderSpec<IpxeInputs> = {
	name: "ipxes",
	fields: {
		script: { type: DataTypes.TEXT, allowNull: false },
		platform: { type: DataTypes.STRING(32), allowNull: false },
		driver: { type: DataTypes.STRING(32), allowNull: false },
		extension: { type: DataTypes.STRING(8), allowNull: false },
	},
	params: {
		script: textParam(MAX_SCRIPT_BYTES),
		platform: { type: "enum", values: [...PLATFORMS] },
		driver: { type: "enum", values: [...DRIVERS] },
		extension: { type: "enum", values: [...EXTENSIONS] },
	},
	validate(inputs) {
		checkScript(inputs.script);
		checkTarget(inputs);
	},
	artifactName: (inputs) => artifactFileName(inputs),
	resultFields: {
		/** Whether the script is compiled into the binary (true only for source-tree builds). */
		embedded: { type: DataTypes.BOOLEAN, allowNull: true },
		/** How the script reaches the booting host. */
		scriptDelivery: { type: DataTypes.TEXT, allowNull: true },
		/** What produced the file: the source tree, or which Debian file (and why, if a substitute). */
		toolchain: { type: DataTypes.TEXT, allowNull: true },
	},
	/**
	 * Identical inputs build different files from a source tree and from Debian's package, so the
	 * mode is part of the content address. The manager assumes its workers share its
	 * IPXE_SOURCE_DIR setting (always so in one process and on one machine; set it on both in a cluster).
	 */
	version: (config) => (ipxeWorkerSettings(config).sourceDir ? "1-source" : "1-prebuilt"),
};

/** /api/ipxes: iPXE network bootloaders (seed: POST {script, platform, driver, extension}); builds are queued. */
export const IpxesService: ServiceSchema = defineService({
	name: "ipxes",
	mixins: [builderManagerMixin(IPXES)],
	actions: {
		/** What each connected worker builds with: the source tree and each platform's preparation, or Debian's binaries. */
		toolchain: {
			rest: "GET /toolchain",
			async handler(): Promise<{ workers: ({ nodeID: string } & (IpxeToolchain | { error: string }))[] }> {
				const services = this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true, withActions: false });
				const nodes = [...new Set(services.filter((s) => s.name === "ipxes-worker").map((s) => s.nodeID))];
				// One worker that does not answer is reported as such; the others still are.
				const answers = await Promise.allSettled(nodes.map((nodeID) => this.broker.call<IpxeToolchain, object>("ipxes-worker.toolchain", {}, { nodeID, timeout: 10_000 })));
				return { workers: answers.map((answer, i) => ({ nodeID: nodes[i]!, ...(answer.status === "fulfilled" ? answer.value : { error: String((answer.reason as Error | undefined)?.message ?? answer.reason) }) })) };
			},
		},
	},
});

/**
 * Builds queued ipxes: real builds with the script embedded when IPXE_SOURCE_DIR names an iPXE
 * checkout, otherwise Debian's prebuilt binaries (no embedded script, and the row says so).
 */
export const IpxesWorkerService: ServiceSchema = defineService<object, { sourceTree?: IpxeSourceTree }>({
	name: "ipxes-worker",
	mixins: [builderWorkerMixin({ ...IPXES, build: buildIpxe, concurrency: 2, timeout: 30 * 60 * 1000 })],
	actions: {
		toolchain: {
			visibility: "public",
			async handler(): Promise<IpxeToolchain> {
				const settings = ipxeWorkerSettings(configOf(this.broker));
				if (!settings.sourceDir) return { mode: "prebuilt", embedded: false, source: DEBIAN_IPXE_DIR, platforms: [] };
				const tree = sourceTreeFor({ ...settings, sourceDir: settings.sourceDir }, configOf(this.broker));
				return { mode: "source", embedded: true, source: tree.srcDir, fingerprint: await tree.fingerprint(), platforms: await tree.states(PLATFORMS) };
			},
		},
	},
	started() {
		const settings = ipxeWorkerSettings(configOf(this.broker));
		if (!settings.sourceDir) {
			if (!fs.existsSync(DEBIAN_IPXE_DIR)) throw new ConfigError(`no IPXE_SOURCE_DIR and no ${DEBIAN_IPXE_DIR}: set IPXE_SOURCE_DIR or install Debian's ipxe package (apt-get install ipxe)`);
			this.logger.info(`ipxes-worker: no IPXE_SOURCE_DIR; serving Debian's prebuilt iPXE from ${DEBIAN_IPXE_DIR} (scripts are not embedded)`);
			return;
		}
		IpxeSourceTree.requireToolchain();
		const tree = sourceTreeFor({ ...settings, sourceDir: settings.sourceDir }, configOf(this.broker));
		this.logger.info(`ipxes-worker: building from the iPXE source tree ${tree.srcDir}`);
		// Warm-up in the background: the worker takes jobs at once, and a job for a platform being prepared waits for it.
		for (const platform of settings.preparePlatforms) {
			const target = defaultTarget(platform);
			tree.prepare(target, this.logger).catch((err: Error) => this.logger.error(`ipxes-worker: preparing ${platform} failed: ${err.message}`));
		}
		this.sourceTree = tree;
	},
	async stopped() {
		// The warm-up above, and spare copies being made, end with the worker.
		await this.sourceTree?.stopPreparations();
		await this.sourceTree?.idle();
	},
});

export default IpxesService;
