import type { ServiceBroker } from "moleculer";

/** What a booting host did, as seen by a distributor (DHCP, TFTP) or the gateway (HTTP). */
export const BOOT_EVENT_KINDS = ["dhcp", "tftp", "script", "kickstart", "artifact", "registered"] as const;
export type BootEventKind = (typeof BOOT_EVENT_KINDS)[number];

export interface BootEvent {
	/** ISO time it was seen. */
	at: string;
	kind: BootEventKind;
	ip: string | null;
	mac: string | null;
	/** The site (distributor's artifactId) that saw it; null for the gateway. */
	artifactId: string | null;
	/** e.g. "proxy offer ipxe.efi", "sent ipxe.efi", "GET /api/mainscripts/1 200". */
	detail: string;
}

/** Balanced to one `boots` instance, which stores the batch. */
export const BOOT_EVENTS = "boots.seen";

/**
 * Collects boot events and sends them in batches: a LAN of hosts powering on produces thousands a
 * second, and the gateway's machine path must not wait on the broker for any of them. A batch holds
 * at most 250 (a host's boot is a dozen steps); beyond that they are counted, logged and dropped, never
 * queued without end.
 */
export class BootEventRecorder {
	private batch: BootEvent[] = [];
	private timer: NodeJS.Timeout | null = null;
	private dropped = 0;

	constructor(
		private readonly broker: ServiceBroker,
		private readonly options: {
			flushMs?: number;
			maxBatch?: number;
			/** Fills in what a batch lacks (e.g. MACs of addresses), once per batch and off the recording path. */
			complete?: (events: BootEvent[]) => Promise<void>;
		} = {},
	) {}

	/** Whether an event would be kept now; one that would not is counted as dropped. Cheap: ask first. */
	admit(): boolean {
		if (this.batch.length < (this.options.maxBatch ?? 250)) return true;
		this.dropped++;
		return false;
	}

	record(event: Omit<BootEvent, "at"> & { at?: string }): void {
		if (!this.admit()) return;
		this.batch.push({ ...event, at: event.at ?? new Date().toISOString() });
		// unref: a batch waiting for its second never keeps a process alive; stop() flushes it.
		this.timer ??= setTimeout(() => void this.flush(), this.options.flushMs ?? 1000).unref();
	}

	async flush(): Promise<void> {
		if (this.timer) clearTimeout(this.timer);
		this.timer = null;
		if (this.batch.length === 0) return;
		const events = this.batch;
		this.batch = [];
		if (this.dropped > 0) {
			this.broker.logger.warn(`boot timeline: ${this.dropped} events dropped (more than ${this.options.maxBatch ?? 250} in one batch)`);
			this.dropped = 0;
		}
		await this.options.complete?.(events).catch((err: Error) => this.broker.logger.warn(`boot timeline: ${err.message}`));
		// No boots service running is not an error of the caller's: the timeline is then not kept.
		await this.broker.emit(BOOT_EVENTS, { events }, { groups: ["boots"] }).catch(() => undefined);
	}

	stop(): Promise<void> {
		return this.flush();
	}
}
