import fs from "node:fs";
import http from "node:http";
import type net from "node:net";
import os from "node:os";
import path from "node:path";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { eventually, freePort } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { startNats, type TestServer } from "../support/servers";

const SITE = "site.over-nats";

/**
 * The deployed shape of tunnels: the cluster (gateway, tunnels manager, tunnel-server) in one
 * process, the site's tunnel-client in another, reaching each other only over NATS and the SSH
 * endpoint — and the site process dying and coming back.
 */
describe("tunnels: cluster and site as separate processes over NATS", () => {
	let nats: TestServer;
	let cluster: ServiceProcess;
	let site: ServiceProcess;
	let target: http.Server;
	let targetPort: number;
	let baseUrl: string;
	let remotePort: number;
	const token = generateToken();
	const dataDirs: string[] = [];
	const dataDir = () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-tunnels-"));
		dataDirs.push(dir);
		return dir;
	};
	const api = (route: string, init: RequestInit = {}) =>
		fetch(`${baseUrl}/api${route}`, { ...init, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...init.headers } });
	const status = async (id: number) => (await (await api(`/tunnels/${id}`)).json()).status as string;
	const startSite = () => startServiceProcess(["start", "tunnel-client"], { TRANSPORTER: nats.url, CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, DATA_DIR: dataDir(), NODE_ID: `site-${Date.now()}` });

	beforeAll(async () => {
		target = http.createServer((req, res) => res.end(`site answers ${req.url}`));
		await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
		targetPort = (target.address() as net.AddressInfo).port;
		nats = await startNats();
		const port = await freePort();
		remotePort = await freePort();
		baseUrl = `http://127.0.0.1:${port}`;
		cluster = startServiceProcess(["start", "gateway", "tunnels", "tunnel-server"], {
			TRANSPORTER: nats.url,
			API_TOKENS: tokenEntry("operator", token, false),
			PORT: String(port),
			HOST: "127.0.0.1",
			PUBLIC_URL: baseUrl,
			DATA_DIR: dataDir(),
			NODE_ID: "cluster",
			TUNNEL_SSH_PORT: String(await freePort()),
			TUNNEL_SSH_HOST: "127.0.0.1",
			TUNNEL_PORT_RANGE: `${remotePort}-${remotePort}`,
		});
		site = startSite();
		await eventually(async () => (await api("/tunnels").catch(() => null))?.status === 200, 30_000, "cluster answering");
	}, 60_000);

	afterAll(async () => {
		await Promise.all([site?.stop(), cluster?.stop()]);
		await nats?.stop();
		await new Promise((resolve) => target?.close(resolve));
		for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	it("carries HTTP from the cluster's port to the site, and reopens after the site process is killed", async () => {
		const created = await api("/tunnels", { method: "POST", body: JSON.stringify({ artifactId: SITE, target: `127.0.0.1:${targetPort}` }) });
		expect(created.status).toBe(201);
		const row = await created.json();
		expect(row).toMatchObject({ remotePort, publicUrl: `tcp://127.0.0.1:${remotePort}` });

		let t0 = Date.now();
		await eventually(async () => (await status(row.id)) === "open", 30_000, "tunnel open");
		console.log(`tunnel open ${Date.now() - t0} ms after POST (client in another process)`);
		expect(await (await fetch(`http://127.0.0.1:${remotePort}/one`)).text()).toBe("site answers /one");

		await site.kill();
		await eventually(async () => (await status(row.id)) === "pending", 30_000, "tunnel pending once the site is gone");
		await expect(fetch(`http://127.0.0.1:${remotePort}/gone`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();

		t0 = Date.now();
		site = startSite();
		await eventually(async () => (await status(row.id)) === "open", 30_000, "tunnel reopened by the new site process");
		console.log(`tunnel reopened ${Date.now() - t0} ms after the site process restarted`);
		expect(await (await fetch(`http://127.0.0.1:${remotePort}/two`)).text()).toBe("site answers /two");

		expect((await api(`/tunnels/${row.id}`, { method: "DELETE" })).status).toBe(200);
		await eventually(async () => {
			try {
				await fetch(`http://127.0.0.1:${remotePort}/after`, { signal: AbortSignal.timeout(2000) });
				return false;
			} catch {
				return true;
			}
		}, 15_000, "remote port closed after DELETE");
	}, 120_000);
});
