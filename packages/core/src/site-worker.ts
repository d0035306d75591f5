import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Context, Service, ServiceBroker } from "moleculer";
import type { Config } from "./config";
import { configOf } from "./context";
import { DnsmasqSupervisor, type DnsmasqStatus, type DnsmasqSupervisorOptions } from "./dnsmasq-supervisor";
import { ConfigError } from "./errors";
import { requireBinary } from "./exec";
import { defineMixin } from "./service-schema";

/**
 * The worker half of a site service (distributor, site DNS): a process on the site's LAN that keeps
 * its state on disk, supervises one dnsmasq, tells the cluster when that dnsmasq starts, stops or
 * crashes, and carries out the manager's commands one at a time. The manager half is
 * site-workers.ts. A site service is a SiteWorkerState subclass (what only it does) and a schema of
 * its actions around siteWorkerMixin.
 */

/** What a site worker's state is made from. */
export interface SiteWorkerEnvironment {
	broker: ServiceBroker;
	config: Config;
	logger: Service["logger"];
	/** The site it serves (CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID). */
	artifactId: string;
	/** Its private directory under DATA_DIR. */
	dir: string;
}

/** A stable identity for a worker across restarts (node IDs change with every process). */
export function persistedIdentity(dir: string): string {
	const file = path.join(dir, "identity");
	if (fs.existsSync(file)) return fs.readFileSync(file, "utf8").trim();
	const identity = crypto.randomUUID();
	fs.writeFileSync(file, `${identity}\n`, { mode: 0o600 });
	return identity;
}

/**
 * The state of one site worker: what it saved (so a restarted worker serves as before), its
 * dnsmasq, and the queue its commands run in. A site service extends it with what only it does;
 * the service schema adapts it (`this.site`).
 */
export abstract class SiteWorkerState<Saved extends object, Status extends DnsmasqStatus> {
	readonly artifactId: string;
	readonly dir: string;
	readonly dnsmasq: DnsmasqSupervisor;
	protected saved: Saved;
	private commands: Promise<unknown> = Promise.resolve();

	constructor(
		protected readonly env: SiteWorkerEnvironment,
		initial: Saved,
		supervisor: DnsmasqSupervisorOptions = {},
	) {
		this.artifactId = env.artifactId;
		this.dir = env.dir;
		const stateFile = this.file("state.json");
		this.saved = fs.existsSync(stateFile) ? (JSON.parse(fs.readFileSync(stateFile, "utf8")) as Saved) : initial;
		this.dnsmasq = new DnsmasqSupervisor(requireBinary("dnsmasq", "dnsmasq-base"), supervisor);
	}

	/** What the manager keys this worker's row by: announced in the service metadata and on every state event. */
	identity(): Record<string, string> {
		return { artifactId: this.artifactId };
	}

	/** What the manager records: dnsmasq's state and this service's settings. */
	abstract status(): Status;

	/** The `status` action's answer, read when the worker (re)connects; more than status() where a service shows more. */
	report(): Status {
		return this.status();
	}

	/** Serve or stop serving; remembered across restarts. */
	abstract setOn(on: boolean): Promise<Status>;

	/** At start: serve again what was served before the process stopped. */
	abstract resume(): Promise<void>;

	/** At stop: end everything it runs. */
	async shutdown(): Promise<void> {
		await this.dnsmasq.stop();
	}

	/** One command at a time: a restart of dnsmasq must not interleave with another command's file writes. */
	serially<T>(command: () => Promise<T>): Promise<T> {
		const result = this.commands.then(command);
		this.commands = result.catch(() => undefined);
		return result;
	}

	protected file(name: string): string {
		return path.join(this.dir, name);
	}

	protected async save(): Promise<void> {
		await fsp.writeFile(this.file("state.json"), JSON.stringify(this.saved, null, "\t"));
	}
}

export interface SiteWorkerOptions<State> {
	/** The broker event the worker's dnsmasq state goes out as; the manager's rows follow it. */
	stateEvent: string;
	/** Its directory under DATA_DIR, e.g. "distributor". */
	dirName: string;
	/** The service's state: its own SiteWorkerState subclass. */
	create(env: SiteWorkerEnvironment): State;
}

/** What siteWorkerMixin gives its service: the state it adapts. */
export interface SiteWorkerVars<State> {
	site: State;
}

/** Any site worker's state, as the mixin handles it. */
type AnySiteWorkerState = SiteWorkerState<object, DnsmasqStatus>;

/**
 * The worker half every site service shares: its state made at creation (the site tag it needs, its
 * directory, metadata the manager finds it by), dnsmasq's state broadcast to the manager, resume at
 * start and shutdown at stop, and the two actions every manager calls — `status` when the worker
 * (re)connects and `setStatus` (PUT /:id/status). The service adds its own actions, which are called
 * by the manager on this node only (see routedToSite in site-workers.ts).
 */
export function siteWorkerMixin<State extends AnySiteWorkerState>(options: SiteWorkerOptions<State>) {
	return defineMixin<object, SiteWorkerVars<State>>({
		actions: {
			status: {
				handler(): DnsmasqStatus {
					return this.site.report();
				},
			},
			setStatus: {
				params: { on: "boolean" },
				handler(ctx: Context<{ on: boolean }>): Promise<DnsmasqStatus> {
					return this.site.serially(() => this.site.setOn(ctx.params.on));
				},
			},
		},
		created() {
			const config = configOf(this.broker);
			if (!config.distributorArtifactId) throw new ConfigError(`the ${this.name} needs CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID (its site tag)`);
			const dir = path.join(config.dataDir, options.dirName);
			fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
			this.site = options.create({ broker: this.broker, config, logger: this.logger, artifactId: config.distributorArtifactId, dir });
			// The manager finds workers (and tells a restart from a new worker) by this metadata.
			Object.assign(this.metadata, this.site.identity());
			this.site.dnsmasq.on("state", (status) => {
				this.broker.broadcast(options.stateEvent, { ...status, ...this.site.identity() }).catch(() => undefined);
			});
		},
		async started() {
			await this.site.resume();
		},
		async stopped() {
			this.site.dnsmasq.removeAllListeners("state");
			await this.site.shutdown();
		},
	});
}
