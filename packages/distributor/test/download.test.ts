import dns from "node:dns/promises";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { isPublicAddress, loadConfig } from "@clusterplatform/core";
import { bootFileSources, downloadTo, type BootFileSources } from "../src/download";
import { freePort } from "@clusterplatform/test-kit/ports";

/**
 * The boot-file download (finding 7 of issue 13): same outbound checks as ISO parts, no
 * redirects followed, and failures that never name the low-level cause (no port scanner).
 */
interface Served {
	origin: string;
	port: number;
	hits: string[];
	close(): Promise<void>;
}

function serve(handler: http.RequestListener): Promise<Served> {
	const hits: string[] = [];
	const server = http.createServer((req, res) => {
		hits.push(req.url ?? "");
		handler(req, res);
	});
	return new Promise((resolve) => {
		server.listen(0, "127.0.0.1", () => {
			const port = (server.address() as AddressInfo).port;
			resolve({
				origin: `http://127.0.0.1:${port}`,
				port,
				hits,
				close: () => new Promise<void>((done) => {
					server.closeAllConnections();
					server.close(() => done());
				}),
			});
		});
	});
}

const BODY = Buffer.from("iPXE binary stand-in\n".repeat(100));

async function failure(promise: Promise<unknown>): Promise<{ code: number; name: string; field: string; message: string }> {
	try {
		await promise;
	} catch (err) {
		const e = err as { code: number; name: string; data: { field: string; message: string }[] };
		return { code: e.code, name: e.name, field: e.data?.[0]?.field ?? "", message: e.data?.[0]?.message ?? String(err) };
	}
	throw new Error("the download succeeded; it should have been refused");
}

describe("boot-file download (distributor)", () => {
	let dir: string;
	let gateway: Served;
	let internal: Served;
	let sources: BootFileSources;
	const file = () => path.join(dir, "boot.bin");

	beforeAll(async () => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-download-"));
		// What the LAN must not reach: a service on an internal address that counts its visitors.
		internal = await serve((_req, res) => res.end("internal secret"));
		gateway = await serve((req, res) => {
			if (req.url === "/ipxe.efi") return void res.end(BODY);
			if (req.url === "/missing") return void res.writeHead(404).end("nope");
			if (req.url === "/to-internal") return void res.writeHead(302, { location: `${internal.origin}/secret` }).end();
			if (req.url === "/to-private") return void res.writeHead(301, { location: "http://10.0.0.5:8080/" }).end();
			if (req.url === "/endless") {
				// No content-length and never ends: only the size bound stops it.
				res.writeHead(200);
				const chunk = Buffer.alloc(64 * 1024, 1);
				const pump = () => {
					while (res.write(chunk));
				};
				res.on("drain", pump);
				pump();
				return;
			}
			if (req.url === "/cut") {
				res.writeHead(200, { "content-length": "100000" });
				res.write(Buffer.alloc(1000));
				setTimeout(() => res.socket?.destroy(), 50);
				return;
			}
			res.writeHead(404).end();
		});
		// As the worker sees it: the gateway's PUBLIC_URL is the only non-public origin it may use.
		sources = bootFileSources(loadConfig({ PUBLIC_URL: gateway.origin, DATA_DIR: dir }));
	});
	afterAll(async () => {
		await gateway?.close();
		await internal?.close();
		fs.rmSync(dir, { recursive: true, force: true });
	});
	afterEach(() => {
		// Nothing half-written is left by a refused or failed download.
		expect(fs.existsSync(file())).toBe(false);
		internal.hits.length = 0;
	});

	it("downloads from the cluster's own gateway (PUBLIC_URL's origin) although it is on a loopback address", async () => {
		expect(sources.origins).toEqual([gateway.origin]);
		expect(await downloadTo("ipxePxeUefiUrl", `${gateway.origin}/ipxe.efi`, file(), { sources })).toBe(BODY.length);
		expect(fs.readFileSync(file()).equals(BODY)).toBe(true);
		fs.rmSync(file());
	});

	it("allows S3_PUBLIC_URL's origin and BOOT_FILE_ALLOWED_HOSTS too", () => {
		const config = loadConfig({ PUBLIC_URL: "http://10.1.2.3:30002/", S3_ENDPOINT: "minio", S3_ACCESS_KEY: "a", S3_SECRET_KEY: "b", S3_PUBLIC_URL: "http://10.1.2.3:30003", BOOT_FILE_ALLOWED_HOSTS: "Boot.Lan, [fd00::5]" });
		expect(bootFileSources(config)).toEqual({ origins: ["http://10.1.2.3:30002", "http://10.1.2.3:30003"], hosts: ["boot.lan", "fd00::5"] });
	});

	it("refuses the gateway's host on another port: the allowance is the origin, not the host (no port scan of it)", async () => {
		const other = await freePort();
		const refused = await failure(downloadTo("ipxePxeBiosUrl", `http://127.0.0.1:${other}/`, file(), { sources }));
		expect(refused).toMatchObject({ code: 422, name: "ValidationError", field: "ipxePxeBiosUrl" });
		expect(refused.message).toMatch(/loopback, private or link-local.*BOOT_FILE_ALLOWED_HOSTS/);
		expect(refused.message).not.toMatch(/ECONNREFUSED|connect/);
	});

	it("refuses everything non-public when no source is opened (the default)", async () => {
		const refused = await failure(downloadTo("ipxePxeUefiUrl", `${gateway.origin}/ipxe.efi`, file()));
		expect(refused).toMatchObject({ code: 422, field: "ipxePxeUefiUrl" });
		expect(refused.message).toMatch(/loopback, private or link-local/);
	});

	it.each([
		["http://10.0.0.5:8080/undionly.kpxe"],
		["http://169.254.169.254/latest/meta-data/"],
		["http://192.168.1.1/"],
		["http://[::1]:8080/"],
		["http://[::ffff:7f00:1]:8080/"],
		["http://[::ffff:127.0.0.1]:8080/"],
		["http://[::ffff:a00:5]:8080/"],
		["http://[64:ff9b:1::a00:5]/"],
		["http://localhost:8080/"],
		["http://0.0.0.0:8080/"],
	])("refuses %s with a 422 before connecting", async (url) => {
		const started = Date.now();
		const refused = await failure(downloadTo("ipxePxeBiosUrl", url, file(), { sources }));
		expect(refused).toMatchObject({ code: 422, field: "ipxePxeBiosUrl" });
		expect(refused.message).toMatch(/loopback|private|localhost/);
		expect(Date.now() - started).toBeLessThan(1000);
	});

	it("refuses a host name that resolves to a loopback address, without saying what it resolved to", async () => {
		const name = os.hostname();
		const addresses = await dns.lookup(name, { all: true }).catch(() => []);
		if (!addresses.length || addresses.some((a) => isPublicAddress(a.address))) {
			console.log(`SKIPPED: ${name} does not resolve to a loopback/private address on this machine`);
			return;
		}
		const refused = await failure(downloadTo("ipxePxeBiosUrl", `http://${name}:${internal.port}/secret`, file(), { sources }));
		expect(refused).toMatchObject({ code: 422, field: "ipxePxeBiosUrl" });
		expect(refused.message).toBe(`${name} resolves to a loopback, private or link-local address; an operator may allow it with BOOT_FILE_ALLOWED_HOSTS`);
		expect(internal.hits).toEqual([]);
	});

	it.each([
		["/to-internal", 302],
		["/to-private", 301],
	])("does not follow a redirect (%s) from an allowed origin: 422 with the status, the target never contacted", async (pathname, status) => {
		const refused = await failure(downloadTo("ipxePxeUefiUrl", `${gateway.origin}${pathname}`, file(), { sources }));
		expect(refused).toMatchObject({ code: 422, field: "ipxePxeUefiUrl" });
		expect(refused.message).toBe(`download failed: HTTP ${status}, a redirect (not followed: give the URL it leads to)`);
		expect(internal.hits).toEqual([]);
	});

	it("says 'could not connect' for a closed port on an allowed host, never the cause (ECONNREFUSED, address, port)", async () => {
		const closed = await freePort();
		const refused = await failure(downloadTo("ipxePxeBiosUrl", `http://127.0.0.1:${closed}/x`, file(), { sources: { origins: [], hosts: ["127.0.0.1"] } }));
		expect(refused).toMatchObject({ code: 422, field: "ipxePxeBiosUrl", message: "download failed: could not connect" });
	});

	it("names only the HTTP status of an answered failure", async () => {
		const refused = await failure(downloadTo("ipxePxeBiosUrl", `${gateway.origin}/missing`, file(), { sources }));
		expect(refused).toMatchObject({ code: 422, message: "download failed: HTTP 404" });
	});

	it("stops a download that keeps streaming at the size bound", async () => {
		const refused = await failure(downloadTo("ipxePxeBiosUrl", `${gateway.origin}/endless`, file(), { sources, maxBytes: 1024 * 1024 }));
		expect(refused).toMatchObject({ code: 422, message: "is more than the 1048576 bytes allowed" });
	});

	it("says the connection broke off when an answer is cut short", async () => {
		const refused = await failure(downloadTo("ipxePxeBiosUrl", `${gateway.origin}/cut`, file(), { sources }));
		expect(refused).toMatchObject({ code: 422, message: "download failed: the connection broke off" });
	});

	it("bounds the time a download may take", async () => {
		const silent = await serve(() => undefined);
		try {
			const refused = await failure(downloadTo("ipxePxeBiosUrl", `${silent.origin}/`, file(), { sources: { origins: [silent.origin], hosts: [] }, timeoutMs: 300 }));
			expect(refused).toMatchObject({ code: 422, message: "download failed: no complete answer within 300 ms" });
		} finally {
			await silent.close();
		}
	});
});
