import net from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import { PORT_PARAM, defineService, siteWorkerMixin, textParam, type SiteWorkerVars } from "@clusterplatform/core";
import { BMC_PARAMS, callBmc, type BmcAnswer, type BmcCall } from "./bmc";
import { tcpReachable } from "./reach";
import { DistributorSite, type DistributorSettings, type WorkerStatus } from "./site";
import { HOST_KEY_FINGERPRINT, presentedHostKey, runScriptOverSsh, streamScriptOverSsh } from "./ssh";

/** The worker's service name; every distributor node runs one, and commands name the node. */
export const WORKER_SERVICE = "distributor-worker";
/** Event a worker emits when dnsmasq starts, stops or crashes. */
export const STATE_EVENT = "distributor.state";

/** The site's known MACs (lower-case), as the manager pushes them; bounded like machines.siteMacs. */
export const KNOWN_MACS_PARAM = { type: "array", items: { type: "string", pattern: /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/ }, max: 100_000 } as const;

const IP_PARAM = { type: "string", custom: (v: string, errors: { type: string; actual: unknown }[]) => (net.isIP(v) ? v : (errors.push({ type: "stringPattern", actual: v }), v)) };

/** What runScript and streamScript take: the node, the script, the key, the recorded host key. */
const SCRIPT_RUN_PARAMS = {
	ip: IP_PARAM,
	script: textParam(1024 * 1024),
	privateKey: textParam(64 * 1024),
	expectedHostKey: { type: "string", pattern: HOST_KEY_FINGERPRINT },
	timeoutMs: { type: "number", integer: true, min: 1000, max: 3_600_000 },
	port: { ...PORT_PARAM, default: 22 },
};
interface ScriptRunParams {
	ip: string;
	script: string;
	privateKey: string;
	expectedHostKey: string;
	timeoutMs: number;
	port: number;
}

/**
 * The site side of a distributor: runs on the target LAN (--net=host, NET_ADMIN) with
 * CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID naming its site. It owns dnsmasq (proxy DHCP + TFTP) and
 * UEFI HTTP boot (site.ts), and SSH to the site's nodes. The "distributors" manager calls these
 * actions on this node by its nodeID; nothing here is published over REST. `status` and
 * `setStatus` come with siteWorkerMixin (core/site-worker.ts).
 */
export const DistributorWorkerService: ServiceSchema = defineService<object, SiteWorkerVars<DistributorSite>>({
	name: WORKER_SERVICE,
	mixins: [siteWorkerMixin({ stateEvent: STATE_EVENT, dirName: "distributor", create: (env) => new DistributorSite(env) })],
	actions: {
		configure: {
			params: {
				ipxePxeUefiUrl: "string",
				ipxePxeBiosUrl: "string",
				ipxePxeUefiIa32Url: { type: "string", optional: true, nullable: true },
				ipxePxeUefiArm64Url: { type: "string", optional: true, nullable: true },
				device: "string",
				range: "string",
				scriptUrl: { type: "string", optional: true, nullable: true },
				knownMachinesOnly: { type: "boolean", optional: true, nullable: true },
				knownMacs: { ...KNOWN_MACS_PARAM, optional: true },
			},
			handler(ctx: Context<DistributorSettings & { knownMacs?: string[] }>): Promise<WorkerStatus> {
				const { knownMacs, ...settings } = ctx.params;
				return this.site.serially(() => this.site.configure(settings, knownMacs));
			},
		},
		/** The site's known MACs changed: what a known-machines-only distributor answers from now on. */
		setKnownMacs: {
			params: { macs: KNOWN_MACS_PARAM },
			handler(ctx: Context<{ macs: string[] }>): Promise<WorkerStatus> {
				return this.site.serially(() => this.site.setKnownMacs(ctx.params.macs));
			},
		},
		reach: {
			params: { ips: { type: "array", items: IP_PARAM, max: 1024 }, port: { ...PORT_PARAM, default: 22 }, timeoutMs: { type: "number", min: 100, max: 10_000, default: 1500 } },
			async handler(ctx: Context<{ ips: string[]; port: number; timeoutMs: number }>): Promise<Record<string, boolean>> {
				const { ips, port, timeoutMs } = ctx.params;
				const results = await Promise.all(ips.map((ip) => tcpReachable(ip, port, timeoutMs)));
				return Object.fromEntries(ips.map((ip, i) => [ip, results[i]!]));
			},
		},
		/** The host key a node's SSH server presents, for an operator to accept; nothing is authenticated. */
		hostKey: {
			params: { ip: IP_PARAM, port: { ...PORT_PARAM, default: 22 }, timeoutMs: { type: "number", integer: true, min: 100, max: 30_000, default: 10_000 } },
			handler(ctx: Context<{ ip: string; port: number; timeoutMs: number }>): Promise<string> {
				return presentedHostKey(ctx.params.ip, ctx.params.port, ctx.params.timeoutMs);
			},
		},
		runScript: {
			params: SCRIPT_RUN_PARAMS,
			handler(ctx: Context<ScriptRunParams>) {
				const { ip, port, script, privateKey, expectedHostKey, timeoutMs } = ctx.params;
				return runScriptOverSsh({ host: ip, port, script, privateKey, expectedHostKey, timeoutMs });
			},
		},
		/**
		 * Power or boot device through a BMC on this site's network. Not serialised with dnsmasq
		 * commands (a BMC may take its whole bound), but bounded in number: a provisioning wave queues here.
		 */
		bmc: {
			params: BMC_PARAMS,
			bulkhead: { enabled: true, concurrency: 16, maxQueueSize: 1000 },
			async handler(ctx: Context<BmcCall>): Promise<BmcAnswer> {
				const what = ctx.params.action === "bootdev" ? `bootdev ${ctx.params.device ?? "?"}` : `power ${ctx.params.action}`;
				try {
					const answer = await callBmc(ctx.params);
					this.logger.info(`${answer.bmc}: ${what} → ${"power" in answer ? answer.power : "set"}`);
					return answer;
				} catch (err) {
					// The message names the BMC by protocol and address only (core's BmcError).
					this.logger.warn(`${what}: ${(err as Error).message}`);
					throw err;
				}
			},
		},
		/** runScript with the output streamed as it arrives (NDJSON records, see ScriptRecord). */
		streamScript: {
			params: SCRIPT_RUN_PARAMS,
			handler(ctx: Context<ScriptRunParams>) {
				const { ip, port, script, privateKey, expectedHostKey, timeoutMs } = ctx.params;
				return streamScriptOverSsh({ host: ip, port, script, privateKey, expectedHostKey, timeoutMs });
			},
		},
	},
});
