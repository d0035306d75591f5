import dgram from "node:dgram";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { listenOn, type BootEvent } from "@clusterplatform/core";
import { BOOT_ARCHITECTURES } from "./dnsmasq";

/**
 * UEFI HTTP boot through the distributor. dnsmasq's proxy mode answers only clients whose vendor
 * class is "PXEClient"; a UEFI HTTP boot client says "HTTPClient:Arch:000NN:…" and is ignored by
 * it. So the worker answers those itself, the way EDK2's HttpBootDxe expects a proxy offer
 * (HttpOfferTypeProxyIpUri): no address (yiaddr 0.0.0.0), option 60 "HTTPClient" and the boot
 * file's http:// URL in option 67 (and the file field); the client takes its address from the
 * router's offer and fetches the URL. No request follows to the proxy, and no port 4011.
 *
 * The URL names the distributor itself: a small HTTP server on the LAN device's IPv4 address
 * serves exactly the iPXE binaries of the TFTP root (GET and HEAD, Content-Length,
 * application/efi), nothing else. An IP literal and plain http, so the firmware needs neither
 * DNS nor TLS, and the bytes are those the TFTP clients get (downloaded and checked once).
 */

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
export const HTTP_CLIENT_CLASS = "HTTPClient";

const MAGIC_COOKIE = 0x63825363;
const BOOTREQUEST = 1;
const BOOTREPLY = 2;
const DHCPDISCOVER = 1;
const DHCPOFFER = 2;
const DHCPREQUEST = 3;
const DHCPACK = 5;

export interface DhcpRequest {
	xid: number;
	htype: number;
	hlen: number;
	flags: number;
	giaddr: string;
	chaddr: Buffer;
	mac: string;
	messageType: number | null;
	vendorClass: string | null;
	/** Option 93, the client system architecture. */
	arch: number | null;
	/** Option 54, the server the client addresses (REQUEST). */
	serverId: string | null;
	/** Option 97, the machine's UUID (echoed, as PXE servers do). */
	uuid: Buffer | null;
}

function ipv4At(packet: Buffer, offset: number): string {
	return [...packet.subarray(offset, offset + 4)].join(".");
}

/** The options this responder reads: message type, server id, vendor class, architecture, UUID. */
const READ_OPTIONS = new Set([53, 54, 60, 93, 97]);
/** Larger than any DHCP packet a firmware sends (one Ethernet frame); bigger datagrams are not parsed. */
const MAX_DHCP_PACKET = 1500;

/** A BOOTREQUEST's fields and the options this responder looks at; null for anything else. */
export function parseDhcpRequest(packet: Buffer): DhcpRequest | null {
	if (packet.length < 240 || packet.length > MAX_DHCP_PACKET || packet[0] !== BOOTREQUEST || packet.readUInt32BE(236) !== MAGIC_COOKIE) return null;
	const hlen = packet[2]!;
	if (hlen < 1 || hlen > 16) return null;
	// Repeated options are concatenated (RFC 3396): their parts are collected and joined once.
	const parts = new Map<number, Buffer[]>();
	for (let i = 240; i < packet.length; ) {
		const code = packet[i]!;
		if (code === 255) break;
		if (code === 0) {
			i++;
			continue;
		}
		const length = packet[i + 1];
		if (length === undefined || i + 2 + length > packet.length) return null;
		if (READ_OPTIONS.has(code)) parts.set(code, [...(parts.get(code) ?? []), packet.subarray(i + 2, i + 2 + length)]);
		i += 2 + length;
	}
	const options = new Map([...parts].map(([code, pieces]) => [code, Buffer.concat(pieces)]));
	const chaddr = Buffer.from(packet.subarray(28, 44));
	const type = options.get(53);
	const arch = options.get(93);
	const server = options.get(54);
	return {
		xid: packet.readUInt32BE(4),
		htype: packet[1]!,
		hlen,
		flags: packet.readUInt16BE(10),
		giaddr: ipv4At(packet, 24),
		chaddr,
		mac: [...chaddr.subarray(0, hlen)].map((b) => b.toString(16).padStart(2, "0")).join(":"),
		messageType: type && type.length === 1 ? type[0]! : null,
		vendorClass: options.get(60)?.toString("latin1") ?? null,
		arch: arch && arch.length >= 2 ? arch.readUInt16BE(0) : null,
		serverId: server && server.length === 4 ? ipv4At(server, 0) : null,
		uuid: options.get(97) ?? null,
	};
}

/** The boot file name for an HTTP boot client architecture (option 93: 15 ia32, 16 x64, 19 arm64), or null. */
export function httpBootFileFor(arch: number | null): string | null {
	if (arch === null) return null;
	return BOOT_ARCHITECTURES.find((a) => a.http.includes(arch))?.file ?? null;
}

/**
 * The proxy answer to an HTTP boot client: OFFER to a DISCOVER, ACK to a REQUEST addressed to this
 * server; null for anything that is not an HTTPClient asking for a file this distributor has.
 */
export function httpBootReply(request: DhcpRequest, serverIp: string, urlOf: (file: string) => string | null): { packet: Buffer; url: string } | null {
	if (!request.vendorClass?.startsWith(HTTP_CLIENT_CLASS)) return null;
	if (request.messageType !== DHCPDISCOVER && !(request.messageType === DHCPREQUEST && request.serverId === serverIp)) return null;
	const file = httpBootFileFor(request.arch);
	const url = file ? urlOf(file) : null;
	if (!url) return null;
	const urlBytes = Buffer.from(url, "latin1");
	if (urlBytes.length > 255) return null;
	const header = Buffer.alloc(240);
	header[0] = BOOTREPLY;
	header[1] = request.htype;
	header[2] = request.hlen;
	header.writeUInt32BE(request.xid, 4);
	// The client has no address yet: the answer is broadcast.
	header.writeUInt16BE(0x8000, 10);
	Buffer.from(request.giaddr.split(".").map(Number)).copy(header, 24);
	request.chaddr.copy(header, 28, 0, 16);
	if (urlBytes.length < 128) urlBytes.copy(header, 108);
	header.writeUInt32BE(MAGIC_COOKIE, 236);
	const option = (code: number, value: Buffer) => Buffer.concat([Buffer.from([code, value.length]), value]);
	const parts = [
		header,
		option(53, Buffer.from([request.messageType === DHCPDISCOVER ? DHCPOFFER : DHCPACK])),
		option(54, Buffer.from(serverIp.split(".").map(Number))),
		option(60, Buffer.from(HTTP_CLIENT_CLASS, "latin1")),
		option(67, urlBytes),
		...(request.uuid && request.uuid.length <= 255 ? [option(97, request.uuid)] : []),
		Buffer.from([255]),
	];
	const packet = Buffer.concat(parts);
	// BOOTP's minimum size.
	return { packet: packet.length < 300 ? Buffer.concat([packet, Buffer.alloc(300 - packet.length)]) : packet, url };
}

type SeenEvent = Pick<BootEvent, "kind" | "ip" | "mac" | "detail">;

export interface HttpBootOptions {
	/** The LAN device's IPv4 address: the HTTP server listens there, and answers come from there. */
	serverIp: string;
	/** The LAN's netmask: only clients on the LAN (or without an address yet) are answered. */
	netmask: string;
	port: number;
	/** Where the boot files are (the TFTP root). */
	root: string;
	/** The boot files present (only these are served, only their architectures answered). */
	files: readonly string[];
	onEvent?: (event: SeenEvent) => void;
	onError?: (message: string) => void;
}

export interface HttpBootStatus {
	listening: boolean;
	/** The URL each served file has, e.g. {"ipxe.efi": "http://192.168.178.20:8067/ipxe.efi"}. */
	urls: Record<string, string>;
	reason: string | null;
}

/** Answers one MAC gets within ANSWER_WINDOW_MS; a firmware asks a few times, a flood is not answered. */
const ANSWERS_PER_MAC = 8;
const ANSWER_WINDOW_MS = 10_000;
/** MACs remembered for that limit; beyond it the memory starts afresh (bounded, never growing). */
const MACS_REMEMBERED = 4096;
/** Boot-file downloads at once, and how long a silent connection is kept. */
const MAX_DOWNLOADS = 256;
const IDLE_TIMEOUT_MS = 30_000;

function ipv4Number(address: string): number {
	return address.split(".").reduce((n, part) => n * 256 + Number(part), 0) >>> 0;
}

function sameNetwork(a: string, b: string, netmask: string): boolean {
	const mask = ipv4Number(netmask);
	return ((ipv4Number(a) & mask) >>> 0) === ((ipv4Number(b) & mask) >>> 0);
}


function bind(socket: dgram.Socket, port: number, address: string): Promise<void> {
	return new Promise((resolve, reject) => {
		socket.once("error", reject);
		socket.bind({ port, address, exclusive: true }, () => {
			socket.off("error", reject);
			resolve();
		});
	});
}

/**
 * The HTTP boot side of a distributor: the proxy responder for HTTPClient DHCP messages and the
 * HTTP server of the boot files. Two UDP sockets share port 67 with dnsmasq (SO_REUSEADDR; dnsmasq
 * sets it under bind-interfaces): one on 0.0.0.0 receives the broadcasts, one on the device's
 * address sends the answers, so that a limited broadcast leaves by that device whatever the
 * routes say. The sender is connected to 255.255.255.255:68, so it never takes a datagram meant
 * for dnsmasq.
 */
export class HttpBootServer {
	private http: http.Server | null = null;
	private receiver: dgram.Socket | null = null;
	private sender: dgram.Socket | null = null;
	private current: HttpBootOptions | null = null;
	private reason: string | null = null;
	/** Known-machines-only: the MACs answered (lower-case); null answers everyone. Kept across restarts. */
	private admitted: ReadonlySet<string> | null = null;
	private readonly answered = new Map<string, number[]>();

	/** Answer only these MACs from now on (null: everyone), as the distributor's dnsmasq does. */
	admit(macs: ReadonlySet<string> | null): void {
		this.admitted = macs;
	}

	status(): HttpBootStatus {
		const options = this.current;
		return { listening: this.http !== null, urls: options ? Object.fromEntries(options.files.map((f) => [f, this.urlOf(options, f)])) : {}, reason: this.reason };
	}

	private urlOf(options: HttpBootOptions, file: string): string {
		return `http://${options.serverIp}:${options.port}/${file}`;
	}

	/** (Re)start on these options; a failure (e.g. the port is taken) is kept as the reason and thrown. */
	async start(options: HttpBootOptions): Promise<HttpBootStatus> {
		await this.stop();
		if (!net.isIPv4(options.serverIp)) throw new Error(`HTTP boot needs an IPv4 address, not ${options.serverIp}`);
		this.current = options;
		try {
			const server = http.createServer((req, res) => this.serve(req, res));
			server.requestTimeout = 60_000;
			server.headersTimeout = 10_000;
			// A client that stops reading holds a socket and a file: bounded in number and in time.
			server.maxConnections = MAX_DOWNLOADS;
			server.setTimeout(IDLE_TIMEOUT_MS, (socket) => socket.destroy());
			await listenOn(server, options.port, options.serverIp);
			this.http = server;
			const receiver = dgram.createSocket({ type: "udp4", reuseAddr: true });
			receiver.on("error", (err) => options.onError?.(`HTTP boot DHCP socket: ${err.message}`));
			receiver.on("message", (message, sender) => this.answer(message, sender.address));
			await bind(receiver, DHCP_SERVER_PORT, "0.0.0.0");
			this.receiver = receiver;
			const sender = dgram.createSocket({ type: "udp4", reuseAddr: true });
			sender.on("error", (err) => options.onError?.(`HTTP boot DHCP answer: ${err.message}`));
			await bind(sender, DHCP_SERVER_PORT, options.serverIp);
			sender.setBroadcast(true);
			await new Promise<void>((resolve, reject) => sender.connect(DHCP_CLIENT_PORT, "255.255.255.255", (err?: Error) => (err ? reject(err) : resolve())));
			this.sender = sender;
			this.reason = null;
		} catch (err) {
			const reason = `HTTP boot is off: ${(err as Error).message}`;
			await this.stop();
			this.current = options;
			this.reason = reason;
			throw new Error(reason);
		}
		return this.status();
	}

	async stop(): Promise<void> {
		const server = this.http;
		this.http = null;
		for (const socket of [this.receiver, this.sender]) {
			try {
				socket?.close();
			} catch {
				// already closed
			}
		}
		this.receiver = null;
		this.sender = null;
		this.current = null;
		this.reason = null;
		if (server) {
			server.closeAllConnections();
			await new Promise<void>((resolve) => server.close(() => resolve()));
		}
	}

	private answer(message: Buffer, from: string): void {
		const options = this.current;
		const sender = this.sender;
		if (!options || !sender) return;
		// Only the LAN's own clients: one without an address yet, or one on the LAN. Relayed requests
		// (giaddr) are not answered: the answer would go wherever the packet says.
		if (from !== "0.0.0.0" && !sameNetwork(from, options.serverIp, options.netmask)) return;
		const request = parseDhcpRequest(message);
		if (!request || request.giaddr !== "0.0.0.0") return;
		if (this.admitted && !this.admitted.has(request.mac)) return;
		if (!this.mayAnswer(request.mac)) return;
		const reply = httpBootReply(request, options.serverIp, (file) => (options.files.includes(file) ? this.urlOf(options, file) : null));
		if (!reply) return;
		sender.send(reply.packet, (err: Error | null) => {
			if (err) options.onError?.(`HTTP boot DHCP answer to ${request.mac}: ${err.message}`);
		});
		options.onEvent?.({ kind: "dhcp", ip: null, mac: request.mac, detail: `http-boot proxy: boot ${reply.url}` });
	}

	/** At most ANSWERS_PER_MAC answers per MAC within ANSWER_WINDOW_MS. */
	private mayAnswer(mac: string): boolean {
		const now = Date.now();
		const recent = (this.answered.get(mac) ?? []).filter((at) => now - at < ANSWER_WINDOW_MS);
		if (recent.length >= ANSWERS_PER_MAC) return false;
		if (!this.answered.has(mac) && this.answered.size >= MACS_REMEMBERED) this.answered.clear();
		this.answered.set(mac, [...recent, now]);
		return true;
	}

	private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
		const options = this.current;
		const name = (req.url ?? "").replace(/^\/+/, "");
		if (req.method !== "GET" && req.method !== "HEAD") {
			res.writeHead(405, { Allow: "GET, HEAD", "Content-Length": "0" }).end();
			return;
		}
		// Exactly the boot files, by name: no paths, no query, nothing else of the data dir.
		if (!options || !options.files.includes(name)) {
			res.writeHead(404, { "Content-Type": "text/plain", "Content-Length": "10" }).end("not found\n");
			return;
		}
		// Opened once: the length sent is that of the file sent, even if a new one is configured meanwhile.
		fs.open(path.join(options.root, name), "r", (openError, fd) => {
			if (openError) {
				res.writeHead(404, { "Content-Type": "text/plain", "Content-Length": "10" }).end("not found\n");
				return;
			}
			fs.fstat(fd, (statError, stat) => {
				if (statError || !stat.isFile()) {
					fs.close(fd, () => undefined);
					res.writeHead(404, { "Content-Type": "text/plain", "Content-Length": "10" }).end("not found\n");
					return;
				}
				res.writeHead(200, { "Content-Type": name.endsWith(".efi") ? "application/efi" : "application/octet-stream", "Content-Length": String(stat.size) });
				if (req.method === "HEAD") {
					fs.close(fd, () => undefined);
					res.end();
					return;
				}
				const stream = fs.createReadStream("", { fd });
				stream.on("error", () => res.destroy());
				res.on("close", () => stream.destroy());
				stream.pipe(res);
				const ip = req.socket.remoteAddress?.replace(/^::ffff:/, "") ?? null;
				// The address links to the MAC of the proxy answer through the neighbour table (filled in per batch, as for TFTP transfers).
				res.on("finish", () => options.onEvent?.({ kind: "artifact", ip, mac: null, detail: `HTTP boot: sent ${name}` }));
			});
		});
	}
}
