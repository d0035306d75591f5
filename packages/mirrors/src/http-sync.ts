import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { permanentFailure, requireBinary, resolveCheckedHost, run, pinnedLookup } from "@clusterplatform/core";
import type { MirrorSource } from "./source";
import { parseRepomd, readPrimary, treeinfoChecksums } from "./repomd";
import type { Obtained, WantedFile } from "./store-sync";

const REQUEST_TIMEOUT_MS = 60_000;
/** repomd.xml itself is small; anything larger is not one. */
const MAX_REPOMD_BYTES = 4 * 1024 * 1024;

export interface Expected {
	checksum: string | null;
	/** The size the metadata gives (primary.xml, repomd.xml); null when it gives none. */
	size: number | null;
	/** A tighter bound than the repository's for a file without a size (repomd.xml, .treeinfo). */
	maxBytes?: number;
}

/** MIRROR_MAX_FILE_SIZE's default: no file of a package repository or install tree comes near it. */
export const DEFAULT_MAX_FILE_BYTES = 4 * 1024 ** 3;

/**
 * An HTTP(S) repository source: every request goes to the address checked when the sync began
 * (keep-alive, no DNS in between), stays under the source's base URL, and follows no redirects.
 */
export class HttpRepository {
	/** Requests made and body bytes received: what this sync took from the source. */
	requests = 0;
	bytesReceived = 0;
	private constructor(
		private readonly source: MirrorSource,
		private readonly agent: http.Agent,
		private readonly signal: AbortSignal,
		/** The most any one file may be (MIRROR_MAX_FILE_SIZE): a file whose metadata gives no size stops there. */
		private readonly maxFileBytes: number,
	) {}

	static async open(source: MirrorSource, allowed: readonly string[], signal: AbortSignal, maxFileBytes = DEFAULT_MAX_FILE_BYTES): Promise<HttpRepository> {
		let pinned;
		try {
			pinned = await resolveCheckedHost(source.host, allowed);
		} catch (err) {
			return permanentFailure(`source: ${(err as Error).message}`);
		}
		const options = { keepAlive: true, maxSockets: 4, lookup: pinnedLookup(pinned) };
		const agent = source.url.startsWith("https:") ? new https.Agent(options) : new http.Agent(options);
		return new HttpRepository(source, agent, signal, maxFileBytes);
	}

	close(): void {
		this.agent.destroy();
	}

	private urlOf(relative: string): URL {
		const url = new URL(relative, this.source.url);
		if (!url.href.startsWith(this.source.url)) permanentFailure(`${relative}: resolves outside the source`);
		return url;
	}

	private get(relative: string): Promise<http.IncomingMessage> {
		const url = this.urlOf(relative);
		const client = url.protocol === "https:" ? https : http;
		this.requests++;
		return new Promise((resolve, reject) => {
			const request = client.get(url, { agent: this.agent, signal: this.signal, timeout: REQUEST_TIMEOUT_MS }, resolve);
			request.once("timeout", () => request.destroy(new Error(`${relative}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
			request.once("error", reject);
		});
	}

	/**
	 * Download a file to `file`, hashing and counting it as it streams; a size or checksum that
	 * differs from what the metadata says fails the sync for good, naming the file.
	 */
	async download(relative: string, file: string, expected: Expected): Promise<number> {
		const received = await this.downloadIfPresent(relative, file, expected);
		if (received === null) throw new Error(`${relative}: the source answered HTTP 404`);
		return received;
	}

	/** Like download, but null when the source has no such file (404). */
	async downloadIfPresent(relative: string, file: string, expected: Expected): Promise<number | null> {
		if (expected.size !== null && expected.size > this.maxFileBytes) {
			permanentFailure(`${relative}: the metadata says ${expected.size} bytes, more than the ${this.maxFileBytes} MIRROR_MAX_FILE_SIZE allows`);
		}
		const response = await this.get(relative);
		const status = response.statusCode ?? 0;
		if (status === 404) {
			response.resume();
			return null;
		}
		if (status !== 200) {
			response.resume();
			const where = status >= 300 && status < 400 ? ` (a redirect to ${String(response.headers.location).slice(0, 300)}; give that URL as the source)` : "";
			const message = `${relative}: the source answered HTTP ${status}${where}`;
			// A missing file may be a source in the middle of its own update: worth a retry. Redirects are not.
			if (status >= 300 && status < 400) permanentFailure(message);
			throw new Error(message);
		}
		const [algorithm, digest] = expected.checksum ? expected.checksum.split(":") : ["sha256", null];
		const hash = createHash(algorithm!);
		// Every download is bounded: by the size the metadata gives, else by MIRROR_MAX_FILE_SIZE (or a tighter bound).
		const limit = expected.size ?? Math.min(expected.maxBytes ?? Infinity, this.maxFileBytes);
		const tooLarge = expected.size !== null ? `larger than the ${limit} bytes the metadata says` : `larger than ${limit} bytes, and the metadata gives no size (MIRROR_MAX_FILE_SIZE)`;
		let received = 0;
		const repository = this;
		const verify = new Transform({
			transform(chunk: Buffer, _encoding, callback) {
				received += chunk.length;
				repository.bytesReceived += chunk.length;
				if (received > limit) return callback(new Error(`${relative}: ${tooLarge}`));
				hash.update(chunk);
				callback(null, chunk);
			},
		});
		await fsp.mkdir(path.dirname(file), { recursive: true });
		try {
			await pipeline(response, verify, fs.createWriteStream(file), { signal: this.signal });
		} catch (err) {
			if (received > limit) permanentFailure((err as Error).message);
			throw err;
		}
		if (expected.size !== null && received !== expected.size) permanentFailure(`${relative}: ${received} bytes, the metadata says ${expected.size}`);
		const actual = hash.digest("hex");
		if (digest && actual !== digest) permanentFailure(`${relative}: checksum mismatch (${algorithm} ${actual}, the metadata says ${digest}); nothing was published`);
		return received;
	}
}

/** Uncompress a metadata file by its extension (gzip and zstd in Node, xz and bzip2 with Debian's tools); the plain file's path. */
async function uncompressed(file: string, href: string, signal: AbortSignal): Promise<string> {
	const out = `${file}.xml`;
	if (href.endsWith(".gz")) await pipeline(fs.createReadStream(file), zlib.createGunzip(), fs.createWriteStream(out));
	else if (href.endsWith(".zst")) await pipeline(fs.createReadStream(file), zlib.createZstdDecompress(), fs.createWriteStream(out));
	else if (href.endsWith(".xz") || href.endsWith(".bz2")) {
		const [binary, pkg, ext] = href.endsWith(".xz") ? ["xz", "xz-utils", ".xz"] : ["bzip2", "bzip2", ".bz2"];
		await fsp.rename(file, `${out}${ext}`);
		await run(requireBinary(binary!, pkg!), ["--decompress", "--force", "--", `${out}${ext}`], { signal, timeout: 600_000 });
	} else return file;
	return out;
}

export interface RepositoryListing {
	files: WantedFile[];
	/** Local, verified copies of the metadata already fetched, by path (no second download). */
	fetched: Map<string, Obtained>;
}

const MAX_TREEINFO_BYTES = 1024 * 1024;

/**
 * An installation tree (Fedora's …/os/) describes its boot images in `.treeinfo`; Anaconda's
 * `url --url=` reads it to find images/install.img. When the source has one, it and every file its
 * [checksums] section lists are mirrored too, verified against those checksums.
 */
async function addInstallTree(repo: HttpRepository, workDir: string, files: WantedFile[], fetched: Map<string, Obtained>): Promise<void> {
	const local = path.join(workDir, "meta", "treeinfo");
	const size = await repo.downloadIfPresent(".treeinfo", local, { checksum: null, size: null, maxBytes: MAX_TREEINFO_BYTES });
	if (size === null) return;
	const text = await fsp.readFile(local);
	fetched.set(".treeinfo", { file: local, moved: size });
	files.push({ path: ".treeinfo", size, checksum: `sha256:${createHash("sha256").update(text).digest("hex")}` });
	for (const { href, checksum } of treeinfoChecksums(text.toString("utf8"))) files.push({ path: href, size: null, checksum });
}

/** Whether the mirror already holds this file unchanged; with a `local` path, also copies it there from the store. */
export type StoredCopy = (file: WantedFile, local: string) => Promise<boolean>;

/**
 * Everything the repository consists of: repomd.xml, each metadata file it lists (fetched and
 * verified now unless the mirror holds it unchanged), and each package primary.xml lists with its
 * checksum and size.
 */
export async function listRepository(repo: HttpRepository, workDir: string, signal: AbortSignal, storedCopy: StoredCopy): Promise<RepositoryListing> {
	const fetched = new Map<string, Obtained>();
	const repomdFile = path.join(workDir, "meta", "repomd.xml");
	const repomdBytes = await repo.download("repodata/repomd.xml", repomdFile, { checksum: null, size: null, maxBytes: MAX_REPOMD_BYTES });
	const repomdSha = createHash("sha256").update(await fsp.readFile(repomdFile)).digest("hex");
	fetched.set("repodata/repomd.xml", { file: repomdFile, moved: repomdBytes });
	const files: WantedFile[] = [{ path: "repodata/repomd.xml", size: repomdBytes, checksum: `sha256:${repomdSha}` }];
	const data = parseRepomd(await fsp.readFile(repomdFile, "utf8"));
	await addInstallTree(repo, workDir, files, fetched);
	let packages: WantedFile[] = [];
	for (const [index, entry] of data.entries()) {
		const local = path.join(workDir, "meta", `${index}-${path.basename(entry.href)}`);
		const known = entry.size === null ? null : { path: entry.href, size: entry.size, checksum: entry.checksum };
		// Unchanged metadata is not fetched again; primary, needed for the package list, comes from the mirror.
		const unchanged = known !== null && (entry.type === "primary" ? await storedCopy(known, local) : await storedCopy(known, ""));
		const moved = unchanged ? 0 : await repo.download(entry.href, local, { checksum: entry.checksum, size: entry.size });
		const size = entry.size ?? moved;
		if (!unchanged) fetched.set(entry.href, { file: local, moved });
		files.push({ path: entry.href, size, checksum: entry.checksum });
		if (entry.type === "primary") {
			const copy = `${local}.work`;
			await fsp.copyFile(local, copy);
			packages = (await readPrimary(await uncompressed(copy, entry.href, signal), entry.href)).map((p) => ({ path: p.href, size: p.size, checksum: p.checksum }));
		}
	}
	if (!data.some((d) => d.type === "primary")) permanentFailure("repodata/repomd.xml lists no primary metadata");
	// A path listed twice (a package also named by .treeinfo) is mirrored once, as first listed.
	const seen = new Set<string>();
	const unique = [...files, ...packages].filter((f) => !seen.has(f.path) && seen.add(f.path));
	return { files: unique, fetched };
}
