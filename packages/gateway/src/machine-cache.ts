import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServiceBroker } from "moleculer";

/** Registries whose raw text booting hosts fetch; their GET /:id is served from memory. */
export const CACHED_REGISTRIES = ["mainscripts", "subscripts", "kickstarts", "prebootscripts", "postbootscripts"] as const;

const MACHINE_GET = new RegExp(`^/api/(${CACHED_REGISTRIES.join("|")})/([1-9][0-9]{0,15})$`);

interface Entry {
	body: Buffer;
	expires: number;
}

/**
 * The boot-storm path. A thousand hosts powering on fetch the same few scripts; answering them
 * through the broker and the database costs ~30× what a static file server does. This cache sits in
 * front of moleculer-web for exactly one kind of request — GET /api/<text registry>/<id> asking for
 * the raw text — and answers from memory. Any change to a registry (moleculer-db broadcasts
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

	/** True when this request is the cache's to answer (it then answers it, hit or miss). */
	handles(req: IncomingMessage): boolean {
		if (req.method !== "GET" || /application\/json/i.test(req.headers.accept ?? "")) return false;
		return MACHINE_GET.test(req.url ?? "");
	}

	/** Answer from memory, or load through the broker; null means "let the gateway answer". */
	async body(req: IncomingMessage): Promise<Buffer | null> {
		const [, registry, id] = MACHINE_GET.exec(req.url ?? "")!;
		const key = `${registry}/${id}`;
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
			if (!this.handles(req)) return next(req, res);
			// A hit is answered in this tick: no promise, no broker, no database.
			const hit = this.entries.get(req.url!.slice(5));
			if (hit && hit.expires > Date.now()) return send(res, hit.body);
			this.body(req).then(
				(body) => (body ? send(res, body) : next(req, res)),
				() => next(req, res),
			);
		};
	}
}
