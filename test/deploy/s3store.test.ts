import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as Minio from "minio";
import { loadConfig, S3Store, storeFor } from "@clusterplatform/core";
import { describeWithRadosgw, startRadosgw, type TestRadosgw } from "../support/radosgw";

/**
 * The artifact store of the distributed mode (S3_* → core's S3Store) against a real S3 server:
 * Ceph's radosgw on a throwaway single-node cluster (test/support/radosgw.ts).
 */
const describeOnRadosgw = describeWithRadosgw("S3Store on radosgw");

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describeOnRadosgw("S3Store on Ceph radosgw", () => {
	let rgw: TestRadosgw;
	let dir: string;
	let file: string;
	let content: Buffer;

	beforeAll(async () => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-s3-"));
		content = randomBytes(3 * 1024 * 1024 + 17);
		file = path.join(dir, "dist.iso");
		fs.writeFileSync(file, content);
		rgw = await startRadosgw();
	}, 180_000);
	afterAll(async () => {
		await rgw?.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	});

	const config = () => loadConfig({ DATA_DIR: dir, ...rgw.env("cpp-artifacts") });

	it("puts, stats, streams and downloads an artifact, byte for byte", async () => {
		const store = storeFor(config());
		expect(store).toBeInstanceOf(S3Store);
		const stored = await store.putFile("isos/1/dist.iso", file, "application/x-iso9660-image");
		expect(stored).toEqual({ key: "isos/1/dist.iso", size: content.length, url: `http://127.0.0.1:${rgw.port}/cpp-artifacts/isos/1/dist.iso` });
		expect(await store.stat("isos/1/dist.iso")).toEqual({ size: content.length });
		expect(await store.stat("isos/1/none.iso")).toBeNull();

		const chunks: Buffer[] = [];
		for await (const chunk of await store.getStream("isos/1/dist.iso")) chunks.push(chunk as Buffer);
		expect(sha256(Buffer.concat(chunks))).toBe(sha256(content));

		const copy = path.join(dir, "copy.iso");
		await store.download("isos/1/dist.iso", copy);
		expect(sha256(fs.readFileSync(copy))).toBe(sha256(content));
		expect(store.keyOfUrl(stored.url)).toBe("isos/1/dist.iso");
		expect(store.keyOfUrl("http://elsewhere/cpp-artifacts/isos/1/dist.iso")).toBeNull();
	}, 120_000);

	it("serves the artifact at its public URL without credentials (what a booting host fetches)", async () => {
		const store = storeFor(config());
		const url = store.url("isos/1/dist.iso");
		const response = await fetch(url);
		expect(response.status).toBe(200);
		expect(sha256(Buffer.from(await response.arrayBuffer()))).toBe(sha256(content));
		// Listing the bucket anonymously is not part of the policy.
		expect((await fetch(`http://127.0.0.1:${rgw.port}/cpp-artifacts`)).status).toBe(403);
	}, 60_000);

	it("presigned URLs work and a tampered signature is refused (signatures are really checked)", async () => {
		const client = new Minio.Client({ endPoint: rgw.endPoint, port: rgw.port, useSSL: false, accessKey: rgw.accessKey, secretKey: rgw.secretKey, pathStyle: true, region: "us-east-1" });
		const presigned = await client.presignedGetObject("cpp-artifacts", "isos/1/dist.iso", 60);
		expect((await fetch(presigned)).status).toBe(200);
		const tampered = new URL(presigned);
		const signature = tampered.searchParams.get("X-Amz-Signature")!;
		tampered.searchParams.set("X-Amz-Signature", `${signature[0] === "a" ? "b" : "a"}${signature.slice(1)}`);
		expect((await fetch(tampered)).status).toBe(403);
	}, 60_000);

	it("refuses a client with a wrong secret key", async () => {
		const wrong = new S3Store({ ...(config().store as Extract<ReturnType<typeof loadConfig>["store"], { kind: "s3" }>), secretKey: "not-the-secret" });
		await expect(wrong.putFile("isos/2/dist.iso", file)).rejects.toThrow(/Signature|Access ?Denied|InvalidAccessKeyId|authorized credentials/i);
	}, 60_000);

	it("removes one artifact, and a whole prefix", async () => {
		const store = storeFor(config());
		await store.putFile("isos/3/a.bin", file);
		await store.putFile("isos/3/b.bin", file);
		await store.remove("isos/1/dist.iso");
		expect(await store.stat("isos/1/dist.iso")).toBeNull();
		await store.removePrefix("isos/3/");
		expect(await store.stat("isos/3/a.bin")).toBeNull();
		expect(await store.stat("isos/3/b.bin")).toBeNull();
	}, 60_000);
});
