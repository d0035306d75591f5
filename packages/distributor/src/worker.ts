import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { BootEventRecorder, ConfigError, ConflictError, configOf, requireBinary, textParam } from "@clusterplatform/core";
import { DnsmasqBootLog } from "./boot-log";
import { BIOS_BOOT_FILE, DnsmasqSupervisor, UEFI_BOOT_FILE, renderDnsmasqConfig, type DnsmasqStatus } from "./dnsmasq";
import { bootFileSources, downloadTo } from "./download";
import { tcpReachable } from "./reach";
import { HOST_KEY_FINGERPRINT, presentedHostKey, runScriptOverSsh, streamScriptOverSsh } from "./ssh";
import { checkDeviceExists, checkUrl, proxyNetworkOf } from "./validation";

/** The worker's service name; every distributor node runs one, and commands name the node. */
export const WORKER_SERVICE = "distributor-worker";
/** Event a worker emits when dnsmasq starts, stops or crashes. */
export const STATE_EVENT = "distributor.state";

export interface DistributorSettings {
	ipxePxeUefiUrl: string;
	ipxePxeBiosUrl: string;
	device: string;
	range: string;
	scriptUrl?: string | null;
}

/** What the worker keeps on disk, so a restarted worker serves as before. */
interface SavedState {
	settings: DistributorSettings | null;
	on: boolean;
}

export interface WorkerStatus extends DnsmasqStatus {
	identity: string;
	artifactId: string;
	configured: boolean;
	settings: DistributorSettings | null;
}

/** A stable identity for this distributor across restarts (node IDs change with every process). */
function persistedIdentity(dir: string): string {
	const file = path.join(dir, "identity");
	if (fs.existsSync(file)) return fs.readFileSync(file, "utf8").trim();
	const identity = crypto.randomUUID();
	fs.writeFileSync(file, `${identity}\n`, { mode: 0o600 });
	return identity;
}

const IP_PARAM = { type: "string", custom: (v: string, errors: { type: string; actual: unknown }[]) => (net.isIP(v) ? v : (errors.push({ type: "stringPattern", actual: v }), v)) };

/** What runScript and streamScript take: the node, the script, the key, the recorded host key. */
const SCRIPT_RUN_PARAMS = {
	ip: IP_PARAM,
	script: textParam(1024 * 1024),
	privateKey: textParam(64 * 1024),
	expectedHostKey: { type: "string", pattern: HOST_KEY_FINGERPRINT },
	timeoutMs: { type: "number", integer: true, min: 1000, max: 3_600_000 },
	port: { type: "number", integer: true, min: 1, max: 65535, default: 22 },
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
 * CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID naming its site. It owns dnsmasq (proxy DHCP + TFTP),
 * the TFTP root with the two iPXE binaries, and SSH to the site's nodes. The "distributors"
 * manager calls these actions on this node by its nodeID; nothing here is published over REST.
 */
export const DistributorWorkerService: ServiceSchema = {
	name: WORKER_SERVICE,
	actions: {
		configure: {
			params: {
				ipxePxeUefiUrl: "string",
				ipxePxeBiosUrl: "string",
				device: "string",
				range: "string",
				scriptUrl: { type: "string", optional: true, nullable: true },
			},
			async handler(this: any, ctx: Context<DistributorSettings>): Promise<WorkerStatus> {
				return this.serially(() => this.configure(ctx.params));
			},
		},
		setStatus: {
			params: { on: "boolean" },
			async handler(this: any, ctx: Context<{ on: boolean }>): Promise<WorkerStatus> {
				return this.serially(() => this.setOn(ctx.params.on));
			},
		},
		status: {
			handler(this: any): WorkerStatus & { recentLog: string[] } {
				return { ...this.currentStatus(), recentLog: this.dnsmasq.recentLog() };
			},
		},
		reach: {
			params: { ips: { type: "array", items: IP_PARAM, max: 1024 }, port: { type: "number", integer: true, min: 1, max: 65535, default: 22 }, timeoutMs: { type: "number", min: 100, max: 10_000, default: 1500 } },
			async handler(ctx: Context<{ ips: string[]; port: number; timeoutMs: number }>): Promise<Record<string, boolean>> {
				const { ips, port, timeoutMs } = ctx.params;
				const results = await Promise.all(ips.map((ip) => tcpReachable(ip, port, timeoutMs)));
				return Object.fromEntries(ips.map((ip, i) => [ip, results[i]!]));
			},
		},
		/** The host key a node's SSH server presents, for an operator to accept; nothing is authenticated. */
		hostKey: {
			params: { ip: IP_PARAM, port: { type: "number", integer: true, min: 1, max: 65535, default: 22 }, timeoutMs: { type: "number", integer: true, min: 100, max: 30_000, default: 10_000 } },
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
		/** runScript with the output streamed as it arrives (NDJSON records, see ScriptRecord). */
		streamScript: {
			params: SCRIPT_RUN_PARAMS,
			handler(ctx: Context<ScriptRunParams>) {
				const { ip, port, script, privateKey, expectedHostKey, timeoutMs } = ctx.params;
				return streamScriptOverSsh({ host: ip, port, script, privateKey, expectedHostKey, timeoutMs });
			},
		},
	},
	methods: {
		/** One command at a time: two configures at once would race on the TFTP root and on dnsmasq. */
		serially<T>(this: any, command: () => Promise<T>): Promise<T> {
			const result = (this.commands ?? Promise.resolve()).then(command);
			this.commands = result.catch(() => undefined);
			return result;
		},
		currentStatus(this: any): WorkerStatus {
			return { ...this.dnsmasq.status(), identity: this.identity, artifactId: this.artifactId, configured: this.saved.settings !== null, settings: this.saved.settings };
		},
		async save(this: any): Promise<void> {
			await fsp.writeFile(path.join(this.dir, "state.json"), JSON.stringify(this.saved, null, "\t"));
		},
		/**
		 * Validate everything, download both binaries next to the TFTP root, then swap them in and
		 * write the config: a failure leaves the previous configuration serving.
		 */
		async configure(this: any, settings: DistributorSettings): Promise<WorkerStatus> {
			checkUrl("ipxePxeUefiUrl", settings.ipxePxeUefiUrl);
			checkUrl("ipxePxeBiosUrl", settings.ipxePxeBiosUrl);
			if (settings.scriptUrl) checkUrl("scriptUrl", settings.scriptUrl);
			checkDeviceExists(settings.device);
			const proxy = proxyNetworkOf(settings.device, settings.range);
			const staging = await fsp.mkdtemp(path.join(this.dir, "staging-"));
			try {
				// Both downloads finish (or fail) before the staging dir can be removed under either.
				// Public addresses, plus the cluster's own gateway and object store (and BOOT_FILE_ALLOWED_HOSTS).
				const sources = bootFileSources(configOf(this.broker));
				const downloads = await Promise.allSettled([
					downloadTo("ipxePxeBiosUrl", settings.ipxePxeBiosUrl, path.join(staging, BIOS_BOOT_FILE), { sources }),
					downloadTo("ipxePxeUefiUrl", settings.ipxePxeUefiUrl, path.join(staging, UEFI_BOOT_FILE), { sources }),
				]);
				for (const download of downloads) if (download.status === "rejected") throw download.reason;
				await fsp.mkdir(this.tftpRoot, { recursive: true });
				for (const name of [BIOS_BOOT_FILE, UEFI_BOOT_FILE]) await fsp.rename(path.join(staging, name), path.join(this.tftpRoot, name));
			} finally {
				await fsp.rm(staging, { recursive: true, force: true });
			}
			const config = renderDnsmasqConfig({ device: settings.device, proxy, tftpRoot: this.tftpRoot, leaseFile: path.join(this.dir, "dnsmasq.leases"), scriptUrl: settings.scriptUrl ?? null });
			await fsp.writeFile(this.confFile, config);
			this.saved.settings = { ...settings, scriptUrl: settings.scriptUrl ?? null };
			await this.save();
			if (this.dnsmasq.running || this.saved.on) await this.dnsmasq.restart(this.confFile);
			return this.currentStatus();
		},
		async setOn(this: any, on: boolean): Promise<WorkerStatus> {
			if (on && !this.saved.settings) throw new ConflictError("this distributor is not configured yet: PUT /api/distributors/:id with ipxePxeUefiUrl, ipxePxeBiosUrl, device and range first");
			this.saved.on = on;
			await this.save();
			if (on) await this.dnsmasq.restart(this.confFile);
			else await this.dnsmasq.stop();
			return this.currentStatus();
		},
	},
	created(this: any) {
		const config = configOf(this.broker);
		if (!config.distributorArtifactId) throw new ConfigError("the distributor worker needs CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID (its site tag)");
		this.artifactId = config.distributorArtifactId;
		this.dir = path.join(config.dataDir, "distributor");
		fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
		this.tftpRoot = path.join(this.dir, "tftp");
		this.confFile = path.join(this.dir, "dnsmasq.conf");
		this.identity = persistedIdentity(this.dir);
		const stateFile = path.join(this.dir, "state.json");
		this.saved = (fs.existsSync(stateFile) ? JSON.parse(fs.readFileSync(stateFile, "utf8")) : { settings: null, on: false }) as SavedState;
		// The manager finds workers (and tells a restart from a new distributor) by this metadata.
		Object.assign(this.metadata, { artifactId: this.artifactId, identity: this.identity });
		this.dnsmasq = new DnsmasqSupervisor(requireBinary("dnsmasq", "dnsmasq-base"));
		this.dnsmasq.on("state", (status: DnsmasqStatus) => {
			this.broker.broadcast(STATE_EVENT, { ...status, identity: this.identity, artifactId: this.artifactId }).catch(() => undefined);
		});
		// What hosts on the LAN ask for (DHCP, TFTP) goes to the boot timeline (/api/boots).
		this.bootEvents = new BootEventRecorder(this.broker);
		const bootLog = new DnsmasqBootLog();
		this.dnsmasq.on("line", (line: string) => {
			const seen = bootLog.parse(line);
			if (seen) this.bootEvents.record({ ...seen, artifactId: this.artifactId });
		});
	},
	async started(this: any) {
		// A restarted distributor serves again what it served before.
		if (this.saved.on && this.saved.settings) await this.dnsmasq.start(this.confFile);
	},
	async stopped(this: any) {
		this.dnsmasq.removeAllListeners("state");
		await this.dnsmasq.stop();
		this.dnsmasq.removeAllListeners("line");
		await this.bootEvents.stop();
	},
};
