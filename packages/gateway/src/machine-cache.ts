import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServiceBroker } from "moleculer";
import type { BootEventRecorder } from "@clusterplatform/core";
import { clientAddress, recordRepeatedBoot, stepsPerClient } from "./boot-trail";
import { machineRequest } from "./machine-path";

/** What the machines service says about a boot answer that may be repeated (packages/machines boot.ts BootRepeat). */
interface BootRepeat {
	mac: string;
	detail: string;
}

interface Entry {
	body: Buffer;
	expires: number;
	/** What the entry costs in memory, roughly: body, key, bookkeeping. */
	bytes: number;
	/** Set on /api/boot answers: what a repeat records, and when its lastSeen was last reported. */
	boot: (BootRepeat & { reportedAt: number }) | null;
}

/** A miss answered by the broker call the cache made itself. */
interface Answer {
	body: Buffer;
	status: number;
	type: string;
}

export interface MachineCacheOptions {
	/** Backstop for a missed `cache.clean` of a text registry. */
	ttlMs?: number;
	/**
	 * Backstop for a missed `cache.clean` of machines, profiles or selectors. Long: a boot entry costs a
	 * database round of the machines service to make again, and the one way to miss an event (the bus
	 * dropped) empties the cache anyway (evictAll on reconnect).
	 */
	bootTtlMs?: number;
	/** Memory the entries may take, counted as body + key + bookkeeping; least recently used go first. */
	maxBytes?: number;
	maxEntries?: number;
	/** Where repeated boots go on the boot timeline (the gateway's batched recorder); none: not recorded. */
	bootEvents?: BootEventRecorder | null;
	/** How often the MACs of repeated boots are sent for their lastSeen. */
	seenFlushMs?: number;
}

/** The services whose rows a rendered boot script depends on: any change to them empties every boot entry. */
const BOOT_SOURCES = new Set(["machines", "profiles", "selectors"]);

/** The query parameters /api/boot takes (packages/machines BOOT_PARAMS); anything else is the action's to refuse. */
const BOOT_QUERY = new Set(["mac", "uuid", "serial", "manufacturer", "product", "arch", "platform"]);

const BOOT_PREFIX = "boot?";

/** A repeated boot's lastSeen is reported at most this often per entry, as the machines service writes it itself. */
const SEEN_REPORT_MS = 30_000;

/** MACs one lastSeen report carries at most (the machines action's bound); the rest wait for their next boot. */
const SEEN_BATCH_MAX = 10_000;

/** A Map entry, its key's string and the object around the body, roughly (V8 on 64 bits). */
const ENTRY_OVERHEAD_BYTES = 200;

/**
 * The boot-storm path. A thousand hosts powering on fetch the same few scripts; answering them
 * through the broker and the database costs ~30× what a static file server does. This cache sits in
 * front of moleculer-web for two kinds of request and answers repeats from memory:
 * - the machine path's cacheable rows (machine-path.ts: GET /api/<text registry>/<id>, no query)
 *   asking for the raw text; a registry's `cache.clean.<service>` (moleculer-db broadcasts it on
 *   create, update and remove, from whichever node made it) empties that registry's entries;
 * - GET /api/boot?mac=…, keyed by the whole query (sorted, decoded). The machines service says which
 *   answers may be repeated (a known, ready machine whose boot told nothing new and moved no status:
 *   never an unknown MAC, never a post-boot script with its token); any change to machines, profiles
 *   or selectors empties all of them, so the next boot sees it. A repeat still leaves its traces,
 *   batched: a boot timeline event (per client limited, as the boot trail) and the machine's lastSeen
 *   (its MAC reported within SEEN_REPORT_MS, once a second in one call).
 * It sits behind the request gate: a request with a wrong token never reaches it. TTLs bound staleness
 * should an event be missed; a load that started before an eviction is not kept. Misses, JSON
 * requests and errors go the normal way (or as the normal way would answer), so the bytes are the same.
 */
export class MachineTextCache {
	private readonly entries = new Map<string, Entry>();
	private readonly loading = new Map<string, Promise<Answer | null>>();
	private bytes = 0;
	/** Bumped by every eviction: a load that began under an older generation may be stale, and is answered but not kept. */
	private generation = 0;
	private readonly options: Required<MachineCacheOptions>;
	private readonly perClient = stepsPerClient();
	private seenPending = new Set<string>();
	private seenTimer: NodeJS.Timeout | null = null;

	constructor(
		private readonly broker: ServiceBroker,
		options: MachineCacheOptions = {},
	) {
		this.options = { ttlMs: 5000, bootTtlMs: 10 * 60_000, maxBytes: 64 * 1024 * 1024, maxEntries: 200_000, bootEvents: null, seenFlushMs: 1000, ...options };
	}

	/** The cache key when this request is the cache's to answer (hit or miss), else null. */
	keyOf(req: IncomingMessage): string | null {
		if (req.method !== "GET" || /application\/json/i.test(req.headers.accept ?? "")) return null;
		const machine = machineRequest(req);
		if (!machine) return null;
		if (machine.route.action === "machines.boot") return machine.hasQuery ? bootKeyOf(req.url ?? "") : null;
		if (!machine.route.cacheable || machine.hasQuery) return null;
		return `${machine.route.action!.split(".")[0]}/${machine.param}`;
	}

	/** How many entries and bytes it holds (for tests and metrics). */
	get size(): { entries: number; bytes: number } {
		return { entries: this.entries.size, bytes: this.bytes };
	}

	/** Empties what a change to this service's rows may have made stale. */
	evict(service: string): void {
		this.generation++;
		const prefix = BOOT_SOURCES.has(service) ? BOOT_PREFIX : `${service}/`;
		for (const key of this.entries.keys()) if (key.startsWith(prefix)) this.remove(key);
	}

	/** Empties everything: events may have been missed (the bus reconnected). */
	evictAll(): void {
		this.generation++;
		for (const key of [...this.entries.keys()]) this.remove(key);
	}

	/** Sends the lastSeen reports still waiting. */
	async stop(): Promise<void> {
		await this.flushSeen();
	}

	/** Wrap an HTTP request listener: cached machine GETs first, everything else to `next`. */
	wrap(next: (req: IncomingMessage, res: ServerResponse) => void) {
		return (req: IncomingMessage, res: ServerResponse): void => {
			const key = this.keyOf(req);
			if (!key) return next(req, res);
			// A hit is answered in this tick: no promise, no broker, no database.
			const hit = this.hit(key);
			if (hit) {
				if (hit.boot) this.repeated(req, hit.boot);
				return send(res, { body: hit.body, status: 200, type: TEXT });
			}
			this.answer(key, req).then(
				(answer) => (answer ? send(res, answer) : next(req, res)),
				() => next(req, res),
			);
		};
	}

	private hit(key: string): Entry | null {
		const entry = this.entries.get(key);
		if (!entry) return null;
		if (entry.expires <= Date.now()) {
			this.remove(key);
			return null;
		}
		// Least recently used goes first: a hit moves to the end.
		this.entries.delete(key);
		this.entries.set(key, entry);
		return entry;
	}

	private answer(key: string, req: IncomingMessage): Promise<Answer | null> {
		let pending = this.loading.get(key);
		if (!pending) {
			pending = (key.startsWith(BOOT_PREFIX) ? this.loadBoot(key, req) : this.loadText(key)).finally(() => this.loading.delete(key));
			this.loading.set(key, pending);
		}
		return pending;
	}

	private async loadText(key: string): Promise<Answer | null> {
		const [registry, id] = key.split("/");
		const generation = this.generation;
		try {
			const text = await this.broker.call<string, { id: number }>(`${registry}.get`, { id: Number(id) }, { meta: { accept: "text/plain" } });
			if (typeof text !== "string") return null;
			const body = Buffer.from(text, "utf8");
			if (generation === this.generation) this.keep(key, body, this.options.ttlMs, null);
			return { body, status: 200, type: TEXT };
		} catch {
			return null;
		}
	}

	/**
	 * The boot action, called as moleculer-web would (same parameters and meta); its answer is sent
	 * as it is, and kept only when the machines service says it may be repeated. An error (a refused
	 * parameter, no machines service) goes the normal way, which answers it as the API does; the
	 * action refuses parameters before it does anything, so nothing happens twice.
	 */
	private async loadBoot(key: string, req: IncomingMessage): Promise<Answer | null> {
		const params = Object.fromEntries(new URLSearchParams(key.slice(BOOT_PREFIX.length)));
		const meta: Record<string, unknown> = { accept: req.headers.accept, remoteAddress: clientAddress(req) ?? undefined };
		const generation = this.generation;
		try {
			const text = await this.broker.call<unknown, Record<string, string>>("machines.boot", params, { meta });
			if (typeof text !== "string") return null;
			const body = Buffer.from(text, "utf8");
			const status = typeof meta.$statusCode === "number" ? meta.$statusCode : 200;
			const repeat = meta.bootRepeat as BootRepeat | undefined;
			if (repeat && status === 200 && generation === this.generation) this.keep(key, body, this.options.bootTtlMs, { ...repeat, reportedAt: Date.now() });
			return { body, status, type: typeof meta.$responseType === "string" ? meta.$responseType : TEXT };
		} catch {
			return null;
		}
	}

	private keep(key: string, body: Buffer, ttlMs: number, boot: Entry["boot"]): void {
		this.remove(key);
		const bytes = body.length + 2 * key.length + ENTRY_OVERHEAD_BYTES + (boot ? 2 * (boot.mac.length + boot.detail.length) : 0);
		if (bytes > this.options.maxBytes) return;
		this.entries.set(key, { body, expires: Date.now() + ttlMs, bytes, boot });
		this.bytes += bytes;
		while (this.bytes > this.options.maxBytes || this.entries.size > this.options.maxEntries) this.remove(this.entries.keys().next().value!);
	}

	private remove(key: string): void {
		const entry = this.entries.get(key);
		if (!entry) return;
		this.entries.delete(key);
		this.bytes -= entry.bytes;
	}

	/** A boot answered from memory: its timeline event and, now and then, its lastSeen. */
	private repeated(req: IncomingMessage, boot: NonNullable<Entry["boot"]>): void {
		if (this.options.bootEvents) recordRepeatedBoot(this.options.bootEvents, this.perClient, req, boot.mac, `${boot.detail} (repeated by the gateway)`);
		const now = Date.now();
		if (now - boot.reportedAt < SEEN_REPORT_MS || this.seenPending.size >= SEEN_BATCH_MAX) return;
		boot.reportedAt = now;
		this.seenPending.add(boot.mac);
		// unref: a report waiting for its second never keeps a process alive; stop() sends it.
		this.seenTimer ??= setTimeout(() => void this.flushSeen(), this.options.seenFlushMs).unref();
	}

	private async flushSeen(): Promise<void> {
		if (this.seenTimer) clearTimeout(this.seenTimer);
		this.seenTimer = null;
		if (this.seenPending.size === 0) return;
		const macs = [...this.seenPending];
		this.seenPending = new Set();
		await this.broker.call("machines.bootsSeen", { macs }).catch((err: Error) => this.broker.logger.warn(`boot cache: lastSeen of ${macs.length} machines not written: ${err.message}`));
	}
}

const TEXT = "text/plain; charset=utf-8";

function send(res: ServerResponse, answer: Answer): void {
	res.writeHead(answer.status, ["Content-Type", answer.type, "Content-Length", String(answer.body.length)]);
	res.end(answer.body);
}

/**
 * "boot?" and the query's parameters sorted by name, decoded and encoded again: one key per boot,
 * however the client spelled it. Null (the normal way answers) for a parameter the action does not
 * take or one given twice — the action refuses those.
 */
export function bootKeyOf(url: string): string | null {
	const query = new URLSearchParams(url.slice(url.indexOf("?") + 1));
	const names = [...query.keys()];
	if (names.length === 0 || names.some((name) => !BOOT_QUERY.has(name)) || new Set(names).size !== names.length || !query.get("mac")) return null;
	query.sort();
	return `${BOOT_PREFIX}${query.toString()}`;
}
