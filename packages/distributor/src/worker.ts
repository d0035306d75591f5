import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { BootEventRecorder, ConfigError, ConflictError, PORT_PARAM, configOf, requireBinary, textParam, type BootEvent } from "@clusterplatform/core";
import { DnsmasqBootLog, completeMacsFromNeighbours } from "./boot-log";
import { BOOT_ARCHITECTURES, DnsmasqSupervisor, renderDnsmasqConfig, type DnsmasqStatus } from "./dnsmasq";
import { bootFileSources, downloadTo } from "./download";
import { HttpBootServer, type HttpBootStatus } from "./http-boot";
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
	/** iPXE for 32-bit x86 UEFI (bin-i386-efi ipxe.efi), for PXE arch 6 and HTTP boot arch 15; optional. */
	ipxePxeUefiIa32Url?: string | null;
	/** iPXE for 64-bit ARM UEFI (bin-arm64-efi ipxe.efi), for PXE arch 11 and HTTP boot arch 19; optional. */
	ipxePxeUefiArm64Url?: string | null;
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
	/** UEFI HTTP boot: the URLs HTTP boot clients get, or why it is off. */
	httpBoot: HttpBootStatus;
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
 * CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID naming its site. It owns dnsmasq (proxy DHCP + TFTP),
 * the TFTP root with the iPXE binaries (BIOS and x64 UEFI; ia32 and arm64 UEFI when configured),
 * UEFI HTTP boot (http-boot.ts: proxy answers to HTTPClient and an HTTP server of the same
 * binaries), and SSH to the site's nodes. The "distributors"
 * manager calls these actions on this node by its nodeID; nothing here is published over REST.
 */
export const DistributorWorkerService: ServiceSchema = {
	name: WORKER_SERVICE,
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
			return {
				...this.dnsmasq.status(),
				identity: this.identity,
				artifactId: this.artifactId,
				configured: this.saved.settings !== null,
				settings: this.saved.settings,
				httpBoot: this.httpBootPort === 0 ? { listening: false, urls: {}, reason: "HTTP boot is off (CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT=0)" } : this.httpBoot.status(),
			};
		},
		async save(this: any): Promise<void> {
			await fsp.writeFile(path.join(this.dir, "state.json"), JSON.stringify(this.saved, null, "\t"));
		},
		/**
		 * Validate everything, download the binaries next to the TFTP root, then swap them in and
		 * write the config: a failure leaves the previous configuration serving.
		 */
		async configure(this: any, settings: DistributorSettings): Promise<WorkerStatus> {
			// The binaries this configuration names: the seed's two always, ia32 and arm64 when given.
			const wanted = BOOT_ARCHITECTURES.filter((a) => a.field === "ipxePxeBiosUrl" || a.field === "ipxePxeUefiUrl" || settings[a.field]);
			for (const architecture of wanted) checkUrl(architecture.field, settings[architecture.field]);
			if (settings.scriptUrl) checkUrl("scriptUrl", settings.scriptUrl);
			checkDeviceExists(settings.device);
			const proxy = proxyNetworkOf(settings.device, settings.range);
			const staging = await fsp.mkdtemp(path.join(this.dir, "staging-"));
			try {
				// Every download finishes (or fails) before the staging dir can be removed under any.
				// Public addresses, plus the cluster's own gateway and object store (and BOOT_FILE_ALLOWED_HOSTS).
				const sources = bootFileSources(configOf(this.broker));
				const downloads = await Promise.allSettled(
					wanted.map((a) => downloadTo(a.field, settings[a.field] as string, path.join(staging, a.file), { sources })),
				);
				for (const download of downloads) if (download.status === "rejected") throw download.reason;
				await fsp.mkdir(this.tftpRoot, { recursive: true });
				for (const { file } of wanted) await fsp.rename(path.join(staging, file), path.join(this.tftpRoot, file));
				// A binary no longer configured is no longer served (its architecture gets no answer).
				for (const { file } of BOOT_ARCHITECTURES) if (!wanted.some((a) => a.file === file)) await fsp.rm(path.join(this.tftpRoot, file), { force: true });
			} finally {
				await fsp.rm(staging, { recursive: true, force: true });
			}
			const config = renderDnsmasqConfig({
				device: settings.device,
				proxy,
				tftpRoot: this.tftpRoot,
				leaseFile: path.join(this.dir, "dnsmasq.leases"),
				scriptUrl: settings.scriptUrl ?? null,
				bootFiles: wanted.map((a) => a.file),
			});
			await fsp.writeFile(this.confFile, config);
			this.saved.settings = {
				...settings,
				ipxePxeUefiIa32Url: settings.ipxePxeUefiIa32Url ?? null,
				ipxePxeUefiArm64Url: settings.ipxePxeUefiArm64Url ?? null,
				scriptUrl: settings.scriptUrl ?? null,
			};
			await this.save();
			if (this.dnsmasq.running || this.saved.on) {
				await this.dnsmasq.restart(this.confFile);
				await this.startHttpBoot();
			}
			return this.currentStatus();
		},
		/** HTTP boot follows dnsmasq's on/off; a failure to listen is reported in the status and logged, not fatal to PXE. */
		async startHttpBoot(this: any): Promise<void> {
			const settings: DistributorSettings | null = this.saved.settings;
			if (this.httpBootPort === 0 || !settings) return;
			try {
				const proxy = proxyNetworkOf(settings.device, settings.range);
				const files = BOOT_ARCHITECTURES.filter((a) => a.http.length > 0 && settings[a.field]).map((a) => a.file);
				await this.httpBoot.start({
					serverIp: proxy.address!,
					netmask: proxy.netmask,
					port: this.httpBootPort,
					root: this.tftpRoot,
					files,
					onEvent: (event: Omit<BootEvent, "at" | "artifactId">) => this.bootEvents.record({ ...event, artifactId: this.artifactId }),
					onError: (message: string) => this.logger.warn(message),
				});
			} catch (err) {
				this.logger.warn(`distributor: ${(err as Error).message}`);
			}
		},
		async setOn(this: any, on: boolean): Promise<WorkerStatus> {
			if (on && !this.saved.settings) throw new ConflictError("this distributor is not configured yet: PUT /api/distributors/:id with ipxePxeUefiUrl, ipxePxeBiosUrl, device and range first");
			this.saved.on = on;
			await this.save();
			if (on) {
				await this.dnsmasq.restart(this.confFile);
				await this.startHttpBoot();
			} else {
				await this.httpBoot.stop();
				await this.dnsmasq.stop();
			}
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
		this.httpBootPort = configOf(this.broker).distributorHttpPort;
		this.httpBoot = new HttpBootServer();
		this.dnsmasq.on("state", (status: DnsmasqStatus) => {
			this.broker.broadcast(STATE_EVENT, { ...status, identity: this.identity, artifactId: this.artifactId }).catch(() => undefined);
		});
		// What hosts on the LAN ask for (DHCP, TFTP) goes to the boot timeline (/api/boots).
		this.bootEvents = new BootEventRecorder(this.broker, { complete: (events) => completeMacsFromNeighbours(events) });
		const bootLog = new DnsmasqBootLog();
		this.dnsmasq.on("line", (line: string) => {
			const seen = bootLog.parse(line);
			if (seen) this.bootEvents.record({ ...seen, artifactId: this.artifactId });
		});
	},
	async started(this: any) {
		// A restarted distributor serves again what it served before.
		if (this.saved.on && this.saved.settings) {
			await this.dnsmasq.start(this.confFile);
			await this.startHttpBoot();
		}
	},
	async stopped(this: any) {
		this.dnsmasq.removeAllListeners("state");
		await this.httpBoot.stop();
		await this.dnsmasq.stop();
		this.dnsmasq.removeAllListeners("line");
		await this.bootEvents.stop();
	},
};
