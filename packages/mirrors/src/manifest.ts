import fsp from "node:fs/promises";
import path from "node:path";
import type { ObjectStore } from "@clusterplatform/core";
import { manifestKey } from "./layout";

/** What the store holds for one file of the mirror, verified when it was stored. */
export interface ManifestEntry {
	size: number;
	/** "<algorithm>:<hex>", e.g. "sha256:9f86…" (the source's own checksum type for repomd sources). */
	checksum: string;
}

/** Saves at most once a second, and less often for large manifests (each save writes all of it). */
const SAVE_EVERY_MS = 1000;
const SAVE_MS_PER_ENTRY = 0.1;

/**
 * The mirror's manifest (path → checksum, size) kept in the store next to the tree. It is saved as
 * files are stored (at most once a second, and at the end), so a worker killed mid-sync leaves a
 * manifest that lets the retry skip every file already stored and verified.
 */
export class Manifest {
	private dirty = false;
	private savedAt = 0;
	/** Saves run one after another: two writers of one object at once could interleave. */
	private saving: Promise<void> = Promise.resolve();

	private constructor(
		private readonly store: ObjectStore,
		private readonly id: number,
		private readonly workDir: string,
		private readonly entries: Map<string, ManifestEntry>,
	) {}

	static async load(store: ObjectStore, id: number, workDir: string): Promise<Manifest> {
		const file = path.join(workDir, "manifest.json");
		const entries = new Map<string, ManifestEntry>();
		if (await store.stat(manifestKey(id))) {
			await store.download(manifestKey(id), file);
			const parsed = JSON.parse(await fsp.readFile(file, "utf8")) as { files?: Record<string, ManifestEntry> };
			for (const [name, entry] of Object.entries(parsed.files ?? {})) {
				if (typeof entry?.checksum === "string" && typeof entry.size === "number") entries.set(name, entry);
			}
		}
		return new Manifest(store, id, workDir, entries);
	}

	get(name: string): ManifestEntry | undefined {
		return this.entries.get(name);
	}

	paths(): string[] {
		return [...this.entries.keys()];
	}

	get size(): number {
		return this.entries.size;
	}

	async set(name: string, entry: ManifestEntry): Promise<void> {
		this.entries.set(name, entry);
		this.dirty = true;
		await this.save(false);
	}

	async delete(name: string): Promise<void> {
		this.dirty = this.entries.delete(name) || this.dirty;
		await this.save(false);
	}

	/** Write it to the store if it changed (`force`), or if it changed and the last save is old enough. */
	save(force = true): Promise<void> {
		const interval = Math.max(SAVE_EVERY_MS, this.entries.size * SAVE_MS_PER_ENTRY);
		if (!this.dirty || (!force && Date.now() - this.savedAt < interval)) return this.saving;
		this.dirty = false;
		this.savedAt = Date.now();
		const write = async () => {
			const file = path.join(this.workDir, "manifest.json");
			const files = Object.fromEntries([...this.entries.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
			await fsp.writeFile(file, JSON.stringify({ version: 1, files }));
			await this.store.putFile(manifestKey(this.id), file, "application/json");
		};
		// After a failed save the chain goes on: the next save writes everything again.
		this.saving = this.saving.catch(() => undefined).then(write).catch((err) => {
			this.dirty = true;
			throw err;
		});
		return this.saving;
	}
}
