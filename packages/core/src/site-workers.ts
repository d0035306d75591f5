import type { Context, ServiceSchema } from "moleculer";
import { mayActForSite } from "./bus";
import { DataTypes, Op } from "./db";

/** A site-side worker as the service registry shows it. */
export interface SiteWorker {
	nodeID: string;
	artifactId: string;
	/** What its row is keyed by (a persisted identity, or the site tag itself). */
	key: string;
}

export interface SiteWorkersOptions<Status> {
	/** The worker service's name, e.g. "distributor-worker". */
	workerService: string;
	/** The row column and service-metadata field that identify a worker's row ("identity", "artifactId"). */
	keyColumn: string;
	/** The worker's `status` action answer → row columns, read when a worker (re)connects. */
	statusColumns(status: Status): Record<string, unknown>;
}

const SYNC_INTERVAL_MS = 10_000;

/**
 * The columns every site-worker row has besides its key: the node it runs on, whether it is there,
 * and the state of the process it supervises (dnsmasq) with the reason when that is not running.
 */
/** The columns of SITE_WORKER_FIELDS as the API answers them. */
export interface SiteWorkerRow {
	id: number;
	artifactId: string;
	nodeID: string;
	online: boolean;
	lastSeen: string | null;
	on: boolean;
	state: string;
	stateReason: string | null;
}

export const SITE_WORKER_FIELDS = {
	nodeID: { type: DataTypes.STRING(255), allowNull: false },
	online: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
	lastSeen: { type: DataTypes.DATE, allowNull: true },
	on: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
	state: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "off" },
	stateReason: { type: DataTypes.TEXT, allowNull: true },
};

/**
 * Rows that follow site-side workers (distributors, site DNS): a row per worker, created when it
 * appears in the service registry, `online`/`nodeID`/`lastSeen` kept current from Moleculer's node
 * events and a periodic sync, its status read when it (re)connects. Commands then go to the row's
 * own node, never to another worker. The service's entity needs artifactId, the key column and
 * SITE_WORKER_FIELDS.
 */
export function siteWorkersMixin<Status>(options: SiteWorkersOptions<Status>): Partial<ServiceSchema> {
	return {
		events: {
			"$services.changed"(this: any) {
				void this.requestSync();
			},
			"$node.disconnected"(this: any) {
				void this.requestSync();
			},
		},
		methods: {
			/**
			 * Workers as the registry shows them — only those whose node ID names the site they claim
			 * (bus.ts): a node of site A that says it serves site B would otherwise be sent B's scripts.
			 */
			connectedWorkers(this: any): SiteWorker[] {
				const services = this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true, withActions: false });
				return services
					.filter((s: any) => s.name === options.workerService && s.metadata?.[options.keyColumn] && s.metadata?.artifactId)
					.map((s: any) => ({ nodeID: s.nodeID, artifactId: String(s.metadata.artifactId), key: String(s.metadata[options.keyColumn]) }))
					.filter((worker: SiteWorker) => {
						if (mayActForSite(this.broker, worker.nodeID, worker.artifactId)) return true;
						this.warnOnce(`node ${worker.nodeID} claims to be a ${options.workerService} of site "${worker.artifactId}", which its node ID does not name: ignored`);
						return false;
					});
			},
			warnOnce(this: any, message: string): void {
				this.warned ??= new Set<string>();
				if (this.warned.has(message) || this.warned.size > 1000) return;
				this.warned.add(message);
				this.logger.warn(message);
			},
			isWorkerNode(this: any, nodeID: string): boolean {
				return this.connectedWorkers().some((w: SiteWorker) => w.nodeID === nodeID);
			},
			/** Update a row and tell caches and listeners, as the REST actions do. */
			async record(this: any, ctx: Context, id: number, changes: Record<string, unknown>) {
				const row = await this.adapter.updateById(id, { $set: changes });
				const json = await this.transformDocuments(ctx, {}, row);
				await this.entityChanged("updated", json, ctx);
				return json;
			},
			/** Serialised: the registry fires bursts of changes, and each sync reads then writes rows. */
			requestSync(this: any): Promise<void> {
				this.syncing = (this.syncing ?? Promise.resolve())
					.then(() => this.syncWorkers())
					.catch((err: Error) => this.logger.warn(`${options.workerService} sync failed: ${err.message}`));
				return this.syncing;
			},
			async syncWorkers(this: any): Promise<void> {
				if (!this.adapter?.model) return;
				const workers: SiteWorker[] = this.connectedWorkers();
				const now = new Date();
				const present: string[] = [];
				for (const worker of workers) {
					const existing = await this.adapter.findOne({ where: { [options.keyColumn]: worker.key } });
					// A row stays with its site: another site's node presenting this row's identity is not it.
					if (existing && existing.artifactId !== worker.artifactId) {
						this.warnOnce(`node ${worker.nodeID} of site "${worker.artifactId}" presents the identity of ${options.workerService} row ${existing.id} of site "${existing.artifactId}": ignored`);
						continue;
					}
					// While the row's node is still connected, another node presenting its identity is not it.
					if (existing?.online && existing.nodeID !== worker.nodeID && workers.some((w) => w.nodeID === existing.nodeID)) {
						this.warnOnce(`node ${worker.nodeID} presents the identity of ${options.workerService} row ${existing.id}, whose node ${existing.nodeID} is still connected: ignored`);
						continue;
					}
					present.push(worker.key);
					const fresh = !existing || !existing.online || existing.nodeID !== worker.nodeID;
					const changes = { artifactId: worker.artifactId, nodeID: worker.nodeID, online: true, lastSeen: now };
					const id = existing ? existing.id : (await this.adapter.insert({ [options.keyColumn]: worker.key, ...changes })).id;
					if (existing) await this.adapter.updateById(id, { $set: changes });
					if (fresh) {
						// A worker that (re)connects reports what it is doing, e.g. serving since before a restart.
						const status: Status | null = await this.broker.call(`${options.workerService}.status`, {}, { nodeID: worker.nodeID, timeout: 10_000 }).catch(() => null);
						if (status) await this.adapter.updateById(id, { $set: options.statusColumns(status) });
					}
				}
				const gone = await this.adapter.find({ query: { online: true, [options.keyColumn]: { [Op.notIn]: present.concat([""]) } } });
				for (const row of gone) await this.adapter.updateById(row.id, { $set: { online: false } });
			},
		},
		started(this: any) {
			this.syncTimer = setInterval(() => void this.requestSync(), SYNC_INTERVAL_MS);
			void this.requestSync();
		},
		async stopped(this: any) {
			clearInterval(this.syncTimer);
			await this.syncing;
		},
	};
}
