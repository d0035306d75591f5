// What the LAN tests use of CommonJS packages that ship no type declarations.

declare module "tftp" {
	import type { Readable } from "node:stream";
	export interface GetStream extends Readable {
		abort(): void;
	}
	export function createClient(options: { host: string; port: number; retries: number; timeout: number }): { createGetStream(file: string): GetStream };
}

declare module "dhcp" {
	export function addOption(code: number, option: { name: string; type: string }): void;
}

declare module "dhcp/lib/protocol.js" {
	/** A parsed DHCP message; options by code, decoded as the package knows them. */
	export interface DhcpMessage {
		op: number;
		xid: number;
		yiaddr: string;
		siaddr: string;
		file: string;
		options: { 43?: number[]; 53?: number; 54?: string; 60?: string; [code: number]: unknown };
	}
	/** Encodes a message into the package's SeqBuffer; `_w` is how much of `_data` was written. */
	export function format(message: Record<string, unknown>): { _data: Buffer; _w: number };
	export function parse(message: Buffer): DhcpMessage;
}
