import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { storeFor, type ObjectStore } from "@clusterplatform/core";
import { eventually, freePort, waitForPort } from "@clusterplatform/test-kit/ports";
import { ADMIN_HEADERS, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { createLan, stopChild, type Lan } from "./netns";
import { startRouter } from "./router";
import { buildTinyLinux, type TinyLinux } from "./tiny-linux";

/** The bus the provisioner and the site's distributor share: its variables and how to end it. */
export interface LabBus {
	env: Record<string, string>;
	stop(): Promise<void>;
}

export interface LabOptions {
	/** Prefix of the lab's temp dir. */
	name: string;
	/** The provisioner's services (in-process, one broker). */
	services: string[];
	/** The bus; a nats-server on the host side of the LAN when not given. */
	bus?: (lan: Lan) => Promise<LabBus>;
	/** More of the provisioner's environment. */
	env?: Record<string, string>;
}

export interface ApiInit {
	method?: string;
	json?: unknown;
}

/**
 * A site LAN in network namespaces with its router (and its own DHCP server), a bus, and the
 * provisioner on the host side, reachable from the LAN: what every test of the site side stands on.
 * `stop()` ends all of it; what a test starts on top (guests, distributors) it stops first.
 */
export interface Lab {
	dir: string;
	lan: Lan;
	bus: LabBus;
	/** The gateway's origin as the LAN sees it. */
	base: string;
	provisioner: TestProvisioner;
	store: ObjectStore;
	/** A key pair made by the API (/api/sshkey); the tiny Linux takes its public half. */
	keys: { publicKey: string; privateKey: string };
	/** An x86-64 node (Debian's cloud kernel, busybox, dropbear) that registers itself. */
	tiny: TinyLinux;
	/** The operator's call: with the admin token. */
	api(pathname: string, init?: ApiInit): Promise<Response>;
	// `any`: each test reads the fields of the answer it knows.
	json(pathname: string): Promise<any>;
	/** POSTs a text registry row and answers its id and raw-text URL. */
	create(registry: string, text: string): Promise<{ id: number; url: string }>;
	/** The seed's chain for `site`: post-boot script (registers the node), subscript (the tiny Linux), with their URLs. */
	nodeChain(site: string, node?: { kernelUrl: string; initrdUrl: string; console: string }): Promise<{ postboot: string; subscript: string }>;
	/** Waits for the distributor `nodeID` of `site` to be online, and answers its row. */
	distributorOnline(site: string, nodeID: string, log: () => string, timeoutMs?: number): Promise<{ id: number; nodeID: string }>;
	stop(): Promise<void>;
}

/** The seed's post-boot script, in busybox dialect: find the address, register the node. */
export function registrationScript(base: string, site: string): string {
	return `#!/bin/sh\nip=$(ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p' | head -n 1)\nwget -q -O - --post-data '' "${base}/api/localnodes?ip=\${ip}&artifactId=${site}&pingable=true"\n`;
}

async function natsOnLan(lan: Lan): Promise<LabBus> {
	const port = await freePort();
	const child = spawn("nats-server", ["-a", lan.hostIp, "-p", String(port)], { stdio: "ignore" });
	await waitForPort(port, 15_000, lan.hostIp);
	return { env: { TRANSPORTER: `nats://${lan.hostIp}:${port}` }, stop: () => stopChild(child) };
}

export async function startLab(options: LabOptions): Promise<Lab> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cpp-${options.name}-`));
	const lan = createLan();
	const router = startRouter(lan, dir);
	let bus: LabBus | undefined;
	let provisioner: TestProvisioner | undefined;
	const stop = async () => {
		await provisioner?.stop();
		await bus?.stop();
		await stopChild(router);
		lan.destroy();
		fs.rmSync(dir, { recursive: true, force: true });
	};
	try {
		bus = await (options.bus ?? natsOnLan)(lan);
		const port = await freePort();
		const base = `http://${lan.hostIp}:${port}`;
		provisioner = await startTestProvisioner({
			services: options.services,
			env: { HOST: lan.hostIp, PORT: String(port), PUBLIC_URL: base, ...bus.env, ...options.env },
		});
		const api = (pathname: string, init: ApiInit = {}) =>
			fetch(`${base}/api${pathname}`, {
				method: init.method ?? "GET",
				// The operator holds a token; booting guests send none (the machine path).
				headers: { ...ADMIN_HEADERS, ...(init.json === undefined ? {} : { "Content-Type": "application/json" }) },
				body: init.json === undefined ? undefined : JSON.stringify(init.json),
			});
		const json = async (pathname: string): Promise<any> => (await api(pathname)).json();
		const create = async (registry: string, text: string) => {
			const res = await api(`/${registry}`, { method: "POST", json: { text } });
			if (res.status !== 201) throw new Error(`POST /api/${registry}: ${res.status} ${await res.text()}`);
			const { id } = (await res.json()) as { id: number };
			return { id, url: `${base}/api/${registry}/${id}` };
		};
		const keys = await json("/sshkey");
		const tiny = buildTinyLinux(path.join(dir, "tiny"), keys.publicKey);
		const store = storeFor(provisioner.config);
		let tinyParts: Promise<[{ url: string }, { url: string }]> | undefined;
		const nodeChain: Lab["nodeChain"] = async (site, node) => {
			if (!node) {
				tinyParts ??= Promise.all([store.putFile("node/vmlinuz", tiny.kernel), store.putFile("node/initrd.cpio.gz", tiny.initrd)]);
				const [kernel, initrd] = await tinyParts;
				node = { kernelUrl: kernel.url, initrdUrl: initrd.url, console: "ttyS0" };
			}
			const postboot = (await create("postbootscripts", registrationScript(base, site))).url;
			const subscript = (await create("subscripts", `#!ipxe\nkernel ${node.kernelUrl} initrd=initrd.cpio.gz console=${node.console} cpp.post=${postboot}\ninitrd ${node.initrdUrl}\nboot\n`)).url;
			return { postboot, subscript };
		};
		const distributorOnline: Lab["distributorOnline"] = (site, nodeID, log, timeoutMs = 60_000) =>
			eventually(async () => {
				const page = await json(`/distributors?search=${site}&searchFields=artifactId`);
				return page.rows.find((row: { online: boolean; nodeID: string }) => row.online && row.nodeID === nodeID);
			}, timeoutMs, `distributor ${nodeID} online`).catch((err: Error) => {
				throw new Error(`${err.message}\n${log()}`);
			});
		return { dir, lan, bus, base, provisioner, store, keys, tiny, api, json, create, nodeChain, distributorOnline, stop };
	} catch (err) {
		await stop();
		throw err;
	}
}
