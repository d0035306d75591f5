import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import * as Minio from "minio";
import type { Config, StoreConfig } from "./config";

export interface StoredObject {
	key: string;
	size: number;
	/** Where clients download it from. */
	url: string;
}

/**
 * A narrow object store: artifacts go in by key ("ipxes/<id>/ipxe.efi") and come out by key or URL.
 * Files under the data dir on embedded defaults, an S3/MinIO bucket when distributed.
 */
export interface ObjectStore {
	putFile(key: string, file: string, contentType?: string): Promise<StoredObject>;
	getStream(key: string): Promise<Readable>;
	/** Copy an object to a local file (e.g. a worker assembling an ISO from parts). */
	download(key: string, file: string): Promise<void>;
	stat(key: string): Promise<{ size: number } | null>;
	remove(key: string): Promise<void>;
	/** Remove every object under a prefix ("isos/12/"). */
	removePrefix(prefix: string): Promise<void>;
	url(key: string): string;
	/** The key behind one of this store's URLs, or null when the URL is not this store's. */
	keyOfUrl(url: string): string | null;
}

/**
 * Path segments of letters, digits and . _ - + ~ (package file names such as libstdc++-…rpm),
 * never starting with "-" or "+"/"~"; a leading "." is allowed for mirrored trees (.treeinfo).
 */
// "+", "~" and "^" stand in package file names (libstdc++, 1.0~rc1, Fedora's 1.0^20260101git snapshots).
const KEY_PATTERN = /^[A-Za-z0-9._][A-Za-z0-9._+~^-]*(\/[A-Za-z0-9._][A-Za-z0-9._+~^-]*)*$/;

/** Keys are built by services, but are checked anyway: no "..", no absolute paths, no odd bytes. */
export function assertKey(key: string): string {
	if (!KEY_PATTERN.test(key) || key.split("/").some((part) => part === "." || part === "..")) {
		throw new Error(`invalid object key "${key}"`);
	}
	return key;
}

export class FileStore implements ObjectStore {
	constructor(
		private readonly root: string,
		private readonly baseUrl: string,
	) {}

	private pathOf(key: string): string {
		return path.join(this.root, assertKey(key));
	}

	async putFile(key: string, file: string): Promise<StoredObject> {
		const target = this.pathOf(key);
		await fsp.mkdir(path.dirname(target), { recursive: true });
		// Copy then rename, so a reader never sees half an artifact.
		const partial = `${target}.partial-${process.pid}-${Date.now()}`;
		await fsp.copyFile(file, partial);
		await fsp.rename(partial, target);
		const { size } = await fsp.stat(target);
		return { key, size, url: this.url(key) };
	}

	async getStream(key: string): Promise<Readable> {
		const file = this.pathOf(key);
		await fsp.access(file);
		return fs.createReadStream(file);
	}

	async download(key: string, file: string): Promise<void> {
		await fsp.copyFile(this.pathOf(key), file);
	}

	async stat(key: string): Promise<{ size: number } | null> {
		try {
			const stats = await fsp.stat(this.pathOf(key));
			return stats.isFile() ? { size: stats.size } : null;
		} catch {
			return null;
		}
	}

	async remove(key: string): Promise<void> {
		await fsp.rm(this.pathOf(key), { force: true });
	}

	async removePrefix(prefix: string): Promise<void> {
		await fsp.rm(this.pathOf(prefix.replace(/\/+$/, "")), { recursive: true, force: true });
	}

	url(key: string): string {
		return `${this.baseUrl}/api/artifacts/${assertKey(key)}`;
	}

	keyOfUrl(url: string): string | null {
		const prefix = `${this.baseUrl}/api/artifacts/`;
		if (!url.startsWith(prefix)) return null;
		const key = url.slice(prefix.length);
		return KEY_PATTERN.test(key) ? key : null;
	}
}

export class S3Store implements ObjectStore {
	private readonly client: Minio.Client;
	private bucketReady: Promise<void> | null = null;

	constructor(private readonly config: Extract<StoreConfig, { kind: "s3" }>) {
		this.client = new Minio.Client({
			endPoint: config.endPoint,
			port: config.port,
			useSSL: config.useSSL,
			accessKey: config.accessKey,
			secretKey: config.secretKey,
			region: config.region,
			pathStyle: true,
		});
	}

	/** Bucket made on first use, publicly readable: booting hosts download without credentials. */
	private ensureBucket(): Promise<void> {
		this.bucketReady ??= (async () => {
			const { bucket, region } = this.config;
			if (!(await this.client.bucketExists(bucket))) {
				try {
					await this.client.makeBucket(bucket, region);
				} catch (err) {
					if ((err as { code?: string }).code !== "BucketAlreadyOwnedByYou") throw err;
				}
			}
			const policy = {
				Version: "2012-10-17",
				Statement: [
					{ Effect: "Allow", Principal: { AWS: ["*"] }, Action: ["s3:GetObject"], Resource: [`arn:aws:s3:::${bucket}/*`] },
				],
			};
			await this.client.setBucketPolicy(bucket, JSON.stringify(policy)).catch(() => undefined);
		})().catch((err) => {
			this.bucketReady = null;
			throw err;
		});
		return this.bucketReady;
	}

	async putFile(key: string, file: string, contentType = "application/octet-stream"): Promise<StoredObject> {
		await this.ensureBucket();
		await this.client.fPutObject(this.config.bucket, assertKey(key), file, { "Content-Type": contentType });
		const { size } = await fsp.stat(file);
		return { key, size, url: this.url(key) };
	}

	async getStream(key: string): Promise<Readable> {
		await this.ensureBucket();
		return this.client.getObject(this.config.bucket, assertKey(key));
	}

	async download(key: string, file: string): Promise<void> {
		await pipeline(await this.getStream(key), fs.createWriteStream(file));
	}

	async stat(key: string): Promise<{ size: number } | null> {
		await this.ensureBucket();
		try {
			const stats = await this.client.statObject(this.config.bucket, assertKey(key));
			return { size: stats.size };
		} catch {
			return null;
		}
	}

	async remove(key: string): Promise<void> {
		await this.ensureBucket();
		await this.client.removeObject(this.config.bucket, assertKey(key));
	}

	async removePrefix(prefix: string): Promise<void> {
		await this.ensureBucket();
		const keys: string[] = [];
		for await (const item of this.client.listObjectsV2(this.config.bucket, prefix, true)) {
			if (item.name) keys.push(item.name);
		}
		if (keys.length) await this.client.removeObjects(this.config.bucket, keys);
	}

	url(key: string): string {
		return `${this.config.publicUrl}/${this.config.bucket}/${assertKey(key)}`;
	}

	keyOfUrl(url: string): string | null {
		const prefix = `${this.config.publicUrl}/${this.config.bucket}/`;
		if (!url.startsWith(prefix)) return null;
		const key = url.slice(prefix.length);
		return KEY_PATTERN.test(key) ? key : null;
	}
}

const stores = new Map<string, ObjectStore>();

/** The store a configuration describes (one client per configuration per process). */
export function storeFor(config: Config): ObjectStore {
	const id = JSON.stringify([config.store, config.publicUrl]);
	let store = stores.get(id);
	if (!store) {
		store = config.store.kind === "files" ? new FileStore(config.store.root, config.publicUrl) : new S3Store(config.store);
		stores.set(id, store);
	}
	return store;
}
