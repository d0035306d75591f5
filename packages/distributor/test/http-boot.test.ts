import { DEFAULT_HTTP_BOOT_PORT, loadConfig } from "@clusterplatform/core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { HttpBootServer, httpBootFileFor, httpBootReply, parseDhcpRequest, type DhcpRequest } from "@clusterplatform/distributor";
import { freePort } from "@clusterplatform/test-kit/ports";

const SERVER = "192.168.178.20";
const urlOf = (file: string) => (["ipxe.efi", "ipxe-arm64.efi"].includes(file) ? `http://${SERVER}:8067/${file}` : null);

/** A client's DISCOVER as EDK2's HttpBootDxe sends it (options 53, 60, 93, 97). */
function discover(vendorClass: string, arch: number, type = 1, extra: number[] = []): Buffer {
	const header = Buffer.alloc(240);
	header[0] = 1;
	header[1] = 1;
	header[2] = 6;
	header.writeUInt32BE(0xdeadbeef, 4);
	Buffer.from([0x52, 0x54, 0x00, 0xc1, 0x00, 0x03]).copy(header, 28);
	header.writeUInt32BE(0x63825363, 236);
	const vc = Buffer.from(vendorClass, "latin1");
	return Buffer.concat([header, Buffer.from([53, 1, type, 60, vc.length]), vc, Buffer.from([93, 2, arch >> 8, arch & 255, 97, 17, 0, ...Array(16).fill(7), ...extra, 255])]);
}

function optionsOf(packet: Buffer): Map<number, Buffer> {
	const options = new Map<number, Buffer>();
	for (let i = 240; i < packet.length && packet[i] !== 255; ) {
		if (packet[i] === 0) {
			i++;
			continue;
		}
		options.set(packet[i]!, packet.subarray(i + 2, i + 2 + packet[i + 1]!));
		i += 2 + packet[i + 1]!;
	}
	return options;
}

describe("UEFI HTTP boot answers (proxy DHCP for vendor class HTTPClient)", () => {
	it("parses a DISCOVER's architecture, vendor class and MAC", () => {
		expect(parseDhcpRequest(discover("HTTPClient:Arch:00016:UNDI:003001", 16))).toMatchObject({ xid: 0xdeadbeef, mac: "52:54:00:c1:00:03", messageType: 1, vendorClass: "HTTPClient:Arch:00016:UNDI:003001", arch: 16 });
	});

	it.each([
		["a reply", (() => { const p = discover("HTTPClient", 16); p[0] = 2; return p; })()],
		["a short packet", Buffer.alloc(100)],
		["an option running past the end", Buffer.concat([discover("HTTPClient", 16).subarray(0, 240), Buffer.from([60, 200, 1, 2])])],
		["a datagram larger than any firmware sends", Buffer.concat([discover("HTTPClient", 16), Buffer.alloc(2000)])],
	])("ignores %s", (_what, packet) => {
		expect(parseDhcpRequest(packet)).toBeNull();
	});

	it("joins a repeated option once, and cheaply: a packet of repeats costs no more than its size", () => {
		const repeats = Array.from({ length: 400 }, () => [60, 1, 0x41]).flat();
		const packet = Buffer.concat([discover("H", 16).subarray(0, 240), Buffer.from([...repeats, 255])]);
		expect(packet.length).toBeLessThanOrEqual(1500);
		expect(parseDhcpRequest(packet)!.vendorClass).toBe("A".repeat(400));
	});

	describe("whom the responder answers", () => {
		const answer = (from: string, packet: Buffer, server = new HttpBootServer()) => {
			const sent: Buffer[] = [];
			const internals = server as unknown as { current: object; sender: object; answer(message: Buffer, from: string): void };
			internals.current = { serverIp: SERVER, netmask: "255.255.255.0", port: 8067, root: "/nonexistent", files: ["ipxe.efi"] };
			internals.sender = { send: (message: Buffer) => void sent.push(message) };
			internals.answer(packet, from);
			return { sent, server };
		};

		it("a client without an address yet, or one on the LAN", () => {
			expect(answer("0.0.0.0", discover("HTTPClient:Arch:00016", 16)).sent).toHaveLength(1);
			expect(answer("192.168.178.77", discover("HTTPClient:Arch:00016", 16)).sent).toHaveLength(1);
		});

		it("not a sender off the LAN, nor a relayed request (its answer would go where the packet says)", () => {
			expect(answer("203.0.113.9", discover("HTTPClient:Arch:00016", 16)).sent).toHaveLength(0);
			const relayed = discover("HTTPClient:Arch:00016", 16);
			Buffer.from([203, 0, 113, 9]).copy(relayed, 24);
			expect(answer("0.0.0.0", relayed).sent).toHaveLength(0);
		});

		it("a few times per MAC, not a flood", () => {
			const server = new HttpBootServer();
			let sent = 0;
			for (let i = 0; i < 50; i++) sent += answer("0.0.0.0", discover("HTTPClient:Arch:00016", 16), server).sent.length;
			expect(sent).toBe(8);
		});
	});

	it("maps HTTP boot architectures to boot files: 16 x64, 15 ia32, 19 arm64, nothing else", () => {
		expect([15, 16, 19, 18, 7, 0, null].map((a) => httpBootFileFor(a))).toEqual(["ipxe-ia32.efi", "ipxe.efi", "ipxe-arm64.efi", null, null, null, null]);
	});

	it("offers an HTTPClient the URL of its architecture's binary, with no address, as EDK2 expects of a proxy offer", () => {
		const reply = httpBootReply(parseDhcpRequest(discover("HTTPClient:Arch:00019:UNDI:003001", 19))!, SERVER, urlOf)!;
		expect(reply.url).toBe(`http://${SERVER}:8067/ipxe-arm64.efi`);
		const packet = reply.packet;
		expect(packet[0]).toBe(2);
		expect(packet.readUInt32BE(4)).toBe(0xdeadbeef);
		// yiaddr 0.0.0.0: a proxy offer; broadcast flag set.
		expect(packet.readUInt32BE(16)).toBe(0);
		expect(packet.readUInt16BE(10)).toBe(0x8000);
		expect(packet.subarray(28, 34).toString("hex")).toBe("525400c10003");
		expect(packet.subarray(108, 108 + reply.url.length).toString("latin1")).toBe(reply.url);
		const options = optionsOf(packet);
		expect(options.get(53)).toEqual(Buffer.from([2]));
		expect([...options.get(54)!].join(".")).toBe(SERVER);
		expect(options.get(60)!.toString()).toBe("HTTPClient");
		expect(options.get(67)!.toString()).toBe(reply.url);
		expect(options.get(97)!.length).toBe(17);
		expect(packet.length).toBeGreaterThanOrEqual(300);
	});

	it("acknowledges a REQUEST addressed to this server, and ignores one for another server", () => {
		const toUs = discover("HTTPClient:Arch:00016", 16, 3, [54, 4, 192, 168, 178, 20]);
		expect(optionsOf(httpBootReply(parseDhcpRequest(toUs)!, SERVER, urlOf)!.packet).get(53)).toEqual(Buffer.from([5]));
		const toRouter = discover("HTTPClient:Arch:00016", 16, 3, [54, 4, 192, 168, 178, 1]);
		expect(httpBootReply(parseDhcpRequest(toRouter)!, SERVER, urlOf)).toBeNull();
	});

	it.each([
		["a PXE client (dnsmasq answers those)", discover("PXEClient:Arch:00007:UNDI:003016", 7)],
		["an architecture without a binary here (ia32 not configured)", discover("HTTPClient:Arch:00015", 15)],
		["an unknown architecture", discover("HTTPClient:Arch:00018", 18)],
		["a plain DHCP client", discover("android-dhcp-13", 16)],
	])("does not answer %s", (_what, packet) => {
		expect(httpBootReply(parseDhcpRequest(packet) as DhcpRequest, SERVER, urlOf)).toBeNull();
	});

	it("reads its port from CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT and refuses nonsense, naming the variable", () => {
		const port = (env: Record<string, string>) => loadConfig(env).distributorHttpPort;
		expect(port({})).toBe(DEFAULT_HTTP_BOOT_PORT);
		expect(port({ CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT: "0" })).toBe(0);
		expect(port({ CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT: "9000" })).toBe(9000);
		for (const bad of ["-1", "70000", "80; rm -rf /", "1e3"]) expect(() => port({ CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT: bad })).toThrow(/CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT/);
	});
});

describe("the HTTP boot file server", () => {
	let dir: string;
	let server: HttpBootServer;
	let port: number;
	beforeAll(() => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-http-boot-"));
		fs.writeFileSync(path.join(dir, "ipxe.efi"), Buffer.alloc(4096, 1));
		fs.writeFileSync(path.join(dir, "state.json"), "secret");
		server = new HttpBootServer();
	});
	afterAll(async () => {
		await server.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	});

	it("serves exactly the boot files (GET and HEAD, Content-Length, application/efi) and nothing else", async () => {
		port = await freePort();
		// Port 67 needs root and is shared with dnsmasq on a LAN; here only the file server is exercised.
		const served = (server as unknown as { serve: (req: unknown, res: unknown) => void }).serve.bind(server);
		const http = await import("node:http");
		const plain = http.createServer((req, res) => served(req, res));
		(server as unknown as { current: object }).current = { serverIp: "127.0.0.1", port, root: dir, files: ["ipxe.efi"] };
		await new Promise<void>((resolve) => plain.listen(port, "127.0.0.1", resolve));
		try {
			const got = await fetch(`http://127.0.0.1:${port}/ipxe.efi`);
			expect(got.status).toBe(200);
			expect(got.headers.get("content-type")).toBe("application/efi");
			expect(got.headers.get("content-length")).toBe("4096");
			expect((await got.arrayBuffer()).byteLength).toBe(4096);
			expect((await fetch(`http://127.0.0.1:${port}/ipxe.efi`, { method: "HEAD" })).headers.get("content-length")).toBe("4096");
			for (const other of ["state.json", "../state.json", "%2e%2e%2fstate.json", "ipxe.efi/", "ipxe.efi?x", ""]) expect((await fetch(`http://127.0.0.1:${port}/${other}`)).status).toBe(404);
			expect((await fetch(`http://127.0.0.1:${port}/ipxe.efi`, { method: "PUT", body: "x" })).status).toBe(405);
		} finally {
			plain.closeAllConnections();
			await new Promise<void>((resolve) => plain.close(() => resolve()));
			(server as unknown as { current: null }).current = null;
		}
	});
});
