import { type ChildProcess } from "node:child_process";
import path from "node:path";
import type { Lan } from "./netns";

const ROOT = path.resolve(__dirname, "../../..");

/**
 * A distributor worker as its own process inside the LAN's distributor namespace (the way it runs
 * on a site: --net=host there), talking NATS to the provisioner. Its output is collected.
 */
export function spawnDistributor(lan: Lan, options: { transporter: string; site: string; publicUrl: string; dataDir: string; nodeId: string; env?: Record<string, string> }): { child: ChildProcess; log(): string } {
	let log = "";
	const child = lan.spawnIn(lan.ns.distributor, process.execPath, [path.join(__dirname, "run-ts.cjs"), path.join(ROOT, "packages/cli/src/main.ts"), "distributor"], {
		cwd: ROOT,
		env: {
			...process.env,
			TRANSPORTER: options.transporter,
			CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: options.site,
			// The gateway's own origin: the one private address the distributor downloads iPXE from.
			PUBLIC_URL: options.publicUrl,
			DATA_DIR: options.dataDir,
			NODE_ID: options.nodeId,
			LOG_LEVEL: "warn",
			...options.env,
		},
		stdio: ["ignore", "pipe", "pipe"],
	});
	child.stdout!.on("data", (c: Buffer) => (log += c.toString()));
	child.stderr!.on("data", (c: Buffer) => (log += c.toString()));
	return { child, log: () => log };
}
