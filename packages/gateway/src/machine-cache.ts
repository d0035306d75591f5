import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServiceBroker } from "moleculer";
import { machineRequest } from "./machine-path";

interface Entry {
	body: Buffer;
	expires: number;
}

/**
 * The boot-storm path. A thousand hosts powering on fetch the same few scripts; answering them
 * through the broker and the database costs ~30× what a static file server does. This cache sits in
 * front of moleculer-web for exactly one kind of request — the machine path's cacheable rows
 * (machine-path.ts: GET /api/<text registry>/<id>, no query) asking for the raw text — and answers
 * from memory. It sits behind the request gate: a request with a wrong token never reaches it. Any change to a registry (moleculer-db broadcasts
 * `cache.clean.<service>` on create, update and remove, from whichever node made it) empties that
 * registry's entries; a short TTL bounds staleness should an event be missed. Misses, JSON requests
 * and errors go the normal way, so the answers are the same bytes either way.
 */
export class MachineTextCache {
	private readonly entries = new Map<string, Entry>();
	private readonly loading = new Map<string, Promise<Buffer | null>>();

	constructor(
		private readonly broker: ServiceBroker,
		private readonly ttlMs = 5000,
		private readonly maxEntries = 10_000,
	) {}

	/** The cache key ("<registry>/<id>") when this request is the cache's to answer (hit or miss), else null. */
	keyOf(req: IncomingMessage): string | null {
		if (req.method !== "GET" || /application\/json/i.test(req.headers.accept ?? "")) return null;
		const machine = machineRequest(req);
		if (!machine?.route.cacheable || machine.hasQuery) return null;
		return `${machine.route.action!.split(".")[0]}/${machine.param}`;
	}

	/** Answer from memory, or load through the broker; null means "let the gateway answer". */
	async body(key: string): Promise<Buffer | null> {
		const [registry, id] = key.split("/");
		const entry = this.entries.get(key);
		if (entry && entry.expires > Date.now()) return entry.body;
		let pending = this.loading.get(key);
		if (!pending) {
			pending = this.load(registry!, Number(id), key).finally(() => this.loading.delete(key));
			this.loading.set(key, pending);
		}
		return pending;
	}

	private async load(registry: string, id: number, key: string): Promise<Buffer | null> {
		try {
			const text = await this.broker.call<string, { id: number }>(`${registry}.get`, { id }, { meta: { accept: "text/plain" } });
			if (typeof text !== "string") return null;
			const body = Buffer.from(text, "utf8");
			if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
			this.entries.set(key, { body, expires: Date.now() + this.ttlMs });
			return body;
		} catch {
			return null;
		}
	}

	evict(registry: string): void {
		for (const key of this.entries.keys()) if (key.startsWith(`${registry}/`)) this.entries.delete(key);
	}

	/** Wrap an HTTP request listener: cached machine GETs first, everything else to `next`. */
	wrap(next: (req: IncomingMessage, res: ServerResponse) => void) {
		const send = (res: ServerResponse, body: Buffer) => {
			res.writeHead(200, ["Content-Type", "text/plain; charset=utf-8", "Content-Length", String(body.length)]);
			res.end(body);
		};
		return (req: IncomingMessage, res: ServerResponse): void => {
			const key = this.keyOf(req);
			if (!key) return next(req, res);
			// A hit is answered in this tick: no promise, no broker, no database.
			const hit = this.entries.get(key);
			if (hit && hit.expires > Date.now()) return send(res, hit.body);
			this.body(key).then(
				(body) => (body ? send(res, body) : next(req, res)),
				() => next(req, res),
			);
		};
	}
}
