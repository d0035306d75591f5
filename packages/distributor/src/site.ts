import fsp from "node:fs/promises";
import path from "node:path";
import { BootEventRecorder, ConflictError, SiteWorkerState, persistedIdentity, type BootEvent, type DnsmasqStatus, type SiteWorkerEnvironment } from "@clusterplatform/core";
import { DnsmasqBootLog, completeMacsFromNeighbours } from "./boot-log";
import { BOOT_ARCHITECTURES, renderDnsmasqConfig, renderKnownHosts } from "./dnsmasq";
import { bootFileSources, downloadTo } from "./download";
import { HttpBootServer, type HttpBootStatus } from "./http-boot";
import { checkDeviceExists, checkUrl, proxyNetworkOf } from "./validation";

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
	/** Answer PXE and HTTP boot only for the site's known machines (knownMacs); default: everyone, as the seed. */
	knownMachinesOnly?: boolean | null;
}

/** What the worker keeps on disk, so a restarted worker serves as before. */
interface SavedState {
	settings: DistributorSettings | null;
	on: boolean;
	/** The site's known MACs as the manager last pushed them (absent in a state saved before the mode existed). */
	knownMacs?: string[];
}

/** Lower-case, colon-separated, each once, in order: the form dnsmasq's file and the HTTP boot check compare. */
function canonicalMacs(macs: readonly string[]): string[] {
	return [...new Set(macs.map((mac) => mac.toLowerCase().replace(/-/g, ":")))].sort();
}

export interface WorkerStatus extends DnsmasqStatus {
	identity: string;
	artifactId: string;
	configured: boolean;
	settings: DistributorSettings | null;
	/** UEFI HTTP boot: the URLs HTTP boot clients get, or why it is off. */
	httpBoot: HttpBootStatus;
	/** How many MACs a known-machines-only distributor answers (the list the manager pushed). */
	knownMacs: number;
}

/**
 * What only a distributor does on its site: the TFTP root with the iPXE binaries (BIOS and x64
 * UEFI; ia32 and arm64 UEFI when configured), dnsmasq as proxy DHCP + TFTP, UEFI HTTP boot
 * (http-boot.ts: proxy answers to HTTPClient and an HTTP server of the same binaries), and the
 * boot events dnsmasq's log shows. Its rows are keyed by a persisted identity, so a restarted
 * distributor keeps its row.
 */
export class DistributorSite extends SiteWorkerState<SavedState, WorkerStatus> {
	private readonly identityValue = persistedIdentity(this.dir);
	private readonly tftpRoot = this.file("tftp");
	private readonly confFile = this.file("dnsmasq.conf");
	private readonly knownHostsFile = this.file("known-macs");
	private readonly httpBoot = new HttpBootServer();
	private readonly httpBootPort: number;
	/** What hosts on the LAN ask for (DHCP, TFTP, HTTP boot) goes to the boot timeline (/api/boots). */
	private readonly bootEvents: BootEventRecorder;

	constructor(env: SiteWorkerEnvironment) {
		super(env, { settings: null, on: false });
		this.httpBootPort = env.config.distributorHttpPort;
		this.bootEvents = new BootEventRecorder(env.broker, { complete: (events) => completeMacsFromNeighbours(events) });
		const bootLog = new DnsmasqBootLog();
		this.dnsmasq.on("line", (line) => {
			const seen = bootLog.parse(line);
			if (seen) this.bootEvents.record({ ...seen, artifactId: this.artifactId });
		});
	}

	override identity(): Record<string, string> {
		return { artifactId: this.artifactId, identity: this.identityValue };
	}

	status(): WorkerStatus {
		return {
			...this.dnsmasq.status(),
			identity: this.identityValue,
			artifactId: this.artifactId,
			configured: this.saved.settings !== null,
			settings: this.saved.settings,
			httpBoot: this.httpBootPort === 0 ? { listening: false, urls: {}, reason: "HTTP boot is off (CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT=0)" } : this.httpBoot.status(),
			knownMacs: this.saved.knownMacs?.length ?? 0,
		};
	}

	/** With dnsmasq's last log lines (DHCP answers, TFTP transfers): what an operator looks at first. */
	override report(): WorkerStatus & { recentLog: string[] } {
		return { ...this.status(), recentLog: this.dnsmasq.recentLog() };
	}

	/**
	 * Validate everything, download the binaries next to the TFTP root, then swap them in and
	 * write the config: a failure leaves the previous configuration serving.
	 */
	async configure(settings: DistributorSettings, knownMacs?: readonly string[]): Promise<WorkerStatus> {
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
			const sources = bootFileSources(this.env.config);
			const downloads = await Promise.allSettled(wanted.map((a) => downloadTo(a.field, settings[a.field] as string, path.join(staging, a.file), { sources })));
			for (const download of downloads) if (download.status === "rejected") throw download.reason;
			await fsp.mkdir(this.tftpRoot, { recursive: true });
			for (const { file } of wanted) await fsp.rename(path.join(staging, file), path.join(this.tftpRoot, file));
			// A binary no longer configured is no longer served (its architecture gets no answer).
			for (const { file } of BOOT_ARCHITECTURES) if (!wanted.some((a) => a.file === file)) await fsp.rm(path.join(this.tftpRoot, file), { force: true });
		} finally {
			await fsp.rm(staging, { recursive: true, force: true });
		}
		if (knownMacs) this.saved.knownMacs = canonicalMacs(knownMacs);
		await this.writeKnownHosts();
		const knownMachinesOnly = settings.knownMachinesOnly ?? false;
		const config = renderDnsmasqConfig({
			device: settings.device,
			proxy,
			tftpRoot: this.tftpRoot,
			leaseFile: this.file("dnsmasq.leases"),
			scriptUrl: settings.scriptUrl ?? null,
			bootFiles: wanted.map((a) => a.file),
			knownHostsFile: knownMachinesOnly ? this.knownHostsFile : null,
		});
		await fsp.writeFile(this.confFile, config);
		this.saved.settings = {
			...settings,
			ipxePxeUefiIa32Url: settings.ipxePxeUefiIa32Url ?? null,
			ipxePxeUefiArm64Url: settings.ipxePxeUefiArm64Url ?? null,
			scriptUrl: settings.scriptUrl ?? null,
			knownMachinesOnly,
		};
		await this.save();
		this.admitOnHttpBoot();
		if (this.dnsmasq.running || this.saved.on) await this.serve();
		return this.status();
	}

	/**
	 * The site's known MACs changed (the manager pushes them). dnsmasq rereads a dhcp-hostsfile on
	 * SIGHUP, but dnsmasq 2.90 aborts on that SIGHUP once it has answered a known host in proxy mode,
	 * so a known-machines-only dnsmasq is restarted instead (well under a second; PXE firmware
	 * repeats its DISCOVER). An unchanged list changes nothing.
	 */
	async setKnownMacs(macs: readonly string[]): Promise<WorkerStatus> {
		const known = canonicalMacs(macs);
		const before = this.saved.knownMacs ?? [];
		if (known.length === before.length && known.every((mac, i) => mac === before[i])) return this.status();
		this.saved.knownMacs = known;
		await this.save();
		await this.writeKnownHosts();
		this.admitOnHttpBoot();
		if (this.saved.settings?.knownMachinesOnly && this.dnsmasq.running) await this.dnsmasq.restart(this.confFile);
		return this.status();
	}

	/** Written whole under another name, then renamed: dnsmasq never reads half a list. */
	private async writeKnownHosts(): Promise<void> {
		const partial = `${this.knownHostsFile}.new`;
		await fsp.writeFile(partial, renderKnownHosts(this.saved.knownMacs ?? []));
		await fsp.rename(partial, this.knownHostsFile);
	}

	private admitOnHttpBoot(): void {
		this.httpBoot.admit(this.saved.settings?.knownMachinesOnly ? new Set(this.saved.knownMacs ?? []) : null);
	}

	async setOn(on: boolean): Promise<WorkerStatus> {
		if (on && !this.saved.settings) throw new ConflictError("this distributor is not configured yet: PUT /api/distributors/:id with ipxePxeUefiUrl, ipxePxeBiosUrl, device and range first");
		this.saved.on = on;
		await this.save();
		if (on) await this.serve();
		else {
			await this.httpBoot.stop();
			await this.dnsmasq.stop();
		}
		return this.status();
	}

	/** A restarted distributor serves again what it served before. */
	async resume(): Promise<void> {
		this.admitOnHttpBoot();
		if (this.saved.on && this.saved.settings) {
			await this.dnsmasq.start(this.confFile);
			await this.startHttpBoot();
		}
	}

	override async shutdown(): Promise<void> {
		await this.httpBoot.stop();
		await this.dnsmasq.stop();
		this.dnsmasq.removeAllListeners("line");
		await this.bootEvents.stop();
	}

	/** dnsmasq rereads its config only when started again. */
	private async serve(): Promise<void> {
		await this.dnsmasq.restart(this.confFile);
		await this.startHttpBoot();
	}

	/** HTTP boot follows dnsmasq's on/off; a failure to listen is reported in the status and logged, not fatal to PXE. */
	private async startHttpBoot(): Promise<void> {
		const settings = this.saved.settings;
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
				onError: (message: string) => this.env.logger.warn(message),
			});
		} catch (err) {
			this.env.logger.warn(`distributor: ${(err as Error).message}`);
		}
	}
}
