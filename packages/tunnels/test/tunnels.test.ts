import http from "node:http";
import type net from "node:net";
import { Client } from "ssh2";
import { freePort, eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { TunnelLink, type TunnelGrant } from "@clusterplatform/tunnels";

const SITE = "site.tunnels";

/** The "site's" service the tunnel exposes: answers its path after a short pause (requests overlap). */
function startTarget(): Promise<{ server: http.Server; port: number }> {
	const server = http.createServer((req, res) => {
		setTimeout(() => res.end(`site answers ${req.url}`), 50);
	});
	return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as net.AddressInfo).port })));
}

/** Logs into the tunnel-server and runs `then` on the ready connection; bounded. */
function sshLogin(port: number, username: string, password: string): Promise<Client> {
	return new Promise((resolve, reject) => {
		const client = new Client();
		const timer = setTimeout(() => (client.end(), reject(new Error("ssh login timed out"))), 10_000);
		client.once("ready", () => (clearTimeout(timer), resolve(client)));
		client.once("error", (err) => (clearTimeout(timer), client.end(), reject(err)));
		client.connect({ host: "127.0.0.1", port, username, password, readyTimeout: 10_000 });
	});
}

function forwardIn(client: Client, addr: string, port: number): Promise<void> {
	return new Promise((resolve, reject) => client.forwardIn(addr, port, (err) => (err ? reject(err) : resolve())));
}

describe.each(DATABASES)("tunnels over SSH (%s)", (database) => {
	let provisioner: TestProvisioner;
	let target: { server: http.Server; port: number };
	let sshPort: number;
	let rangeStart: number;

	beforeAll(async () => {
		target = await startTarget();
		sshPort = await freePort();
		rangeStart = await freePort();
		provisioner = await startTestProvisioner({
			database,
			services: ["gateway", "tunnels", "tunnel-server", "tunnel-client"],
			env: {
				CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE,
				TUNNEL_SSH_PORT: String(sshPort),
				TUNNEL_SSH_HOST: "127.0.0.1",
				TUNNEL_PUBLIC_HOST: "127.0.0.1",
				TUNNEL_PORT_RANGE: `${rangeStart}-${rangeStart}`,
			},
		});
	}, 60_000);

	afterAll(async () => {
		await provisioner?.stop();
		await new Promise((resolve) => target?.server.close(resolve));
	});

	test("bad targets and ports are 422s naming the field", async () => {
		for (const [body, field] of [
			[{ artifactId: SITE, target: "no-port" }, "target"],
			[{ artifactId: SITE, target: "127.0.0.1:70000" }, "target"],
			[{ artifactId: SITE, target: "bad_host!:22" }, "target"],
			[{ artifactId: SITE, target: "127.0.0.1:22", remotePort: 0 }, "remotePort"],
			[{ target: "127.0.0.1:22" }, "artifactId"],
		] as const) {
			const res = await provisioner.api("/tunnels", { method: "POST", json: body });
			expect(res.status).toBe(422);
			expect(JSON.stringify(await res.json())).toContain(field);
		}
		const list = await (await provisioner.api("/tunnels")).json();
		expect(list.rows).toEqual([]);
	});

	test("HTTP to the remote port reaches the site's target through SSH, multiplexed; DELETE closes it", async () => {
		const created = await provisioner.api("/tunnels", { method: "POST", json: { artifactId: SITE, target: `127.0.0.1:${target.port}` } });
		expect(created.status).toBe(201);
		const row = await created.json();
		const from = rangeStart;
		expect(row).toMatchObject({ artifactId: SITE, status: "pending", remotePort: from, publicUrl: `tcp://127.0.0.1:${from}` });
		expect(row.token).toBeUndefined();

		const started = Date.now();
		await eventually(async () => (await (await provisioner.api(`/tunnels/${row.id}`)).json()).status === "open", 20_000, "tunnel open");
		console.log(`tunnel ${row.id} open after ${Date.now() - started} ms`);

		const one = await fetch(`http://127.0.0.1:${row.remotePort}/hello`);
		expect(await one.text()).toBe("site answers /hello");

		// 20 overlapping requests: all travel as channels of the one SSH connection.
		const t0 = Date.now();
		const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => fetch(`http://127.0.0.1:${row.remotePort}/r${i}`, { headers: { Connection: "close" } }).then((r) => r.text())));
		expect(answers).toEqual(Array.from({ length: 20 }, (_, i) => `site answers /r${i}`));
		console.log(`20 concurrent requests through the tunnel in ${Date.now() - t0} ms`);
		const server = provisioner.broker.getLocalService("tunnel-server") as unknown as { sessions: Set<unknown> };
		expect(server.sessions.size).toBe(1);

		// The range has one port: a second tunnel asking for it is a conflict.
		const clash = await provisioner.api("/tunnels", { method: "POST", json: { artifactId: SITE, target: "127.0.0.1:22", remotePort: row.remotePort } });
		expect(clash.status).toBe(409);

		const removed = await provisioner.api(`/tunnels/${row.id}`, { method: "DELETE" });
		expect(removed.status).toBe(200);
		expect((await removed.json()).status).toBe("closed");
		await eventually(async () => {
			try {
				await fetch(`http://127.0.0.1:${row.remotePort}/after`, { signal: AbortSignal.timeout(2000) });
				return false;
			} catch {
				return true;
			}
		}, 10_000, "remote port stops answering");
		expect(server.sessions.size).toBe(0);
		expect((await (await provisioner.api(`/tunnels/${row.id}`)).json()).status).toBe("closed");
	}, 60_000);

	test("the SSH endpoint refuses wrong credentials, forwards the row does not allow, shells and direct-tcpip", async () => {
		const remotePort = await freePort();
		const created = await provisioner.api("/tunnels", { method: "POST", json: { artifactId: "site.elsewhere", target: "127.0.0.1:9", remotePort } });
		expect(created.status).toBe(201);
		const { id } = await created.json();
		const [grant] = (await provisioner.broker.call("tunnels.siteTunnels", { artifactId: "site.elsewhere" })) as TunnelGrant[];
		expect(grant!.id).toBe(id);

		await expect(sshLogin(sshPort, `tunnel-${id}`, "not-the-token")).rejects.toMatchObject({ level: "client-authentication" });
		await expect(sshLogin(sshPort, "root", grant!.token)).rejects.toMatchObject({ level: "client-authentication" });

		const client = await sshLogin(sshPort, `tunnel-${id}`, grant!.token);
		try {
			const otherPort = await freePort();
			await expect(forwardIn(client, "127.0.0.1", otherPort)).rejects.toThrow();
			await expect(forwardIn(client, "0.0.0.0", remotePort)).rejects.toThrow();
			await expect(new Promise((resolve, reject) => client.exec("id", (err) => (err ? reject(err) : resolve("exec allowed"))))).rejects.toThrow();
			await expect(new Promise((resolve, reject) => client.forwardOut("127.0.0.1", 0, "127.0.0.1", target.port, (err) => (err ? reject(err) : resolve("direct-tcpip allowed"))))).rejects.toThrow();
			await forwardIn(client, "127.0.0.1", remotePort);
			await eventually(async () => (await (await provisioner.api(`/tunnels/${id}`)).json()).status === "open", 10_000, "tunnel open");
		} finally {
			client.end();
		}
		await eventually(async () => (await (await provisioner.api(`/tunnels/${id}`)).json()).status === "pending", 10_000, "tunnel back to pending");

		// A client pins the host keys the manager names: an endpoint with another key is refused.
		expect(grant!.hostKeys).toHaveLength(1);
		const problems: string[] = [];
		const link = new TunnelLink({ ...grant!, hostKeys: [Buffer.from("not the server's key").toString("base64")] }, { host: "127.0.0.1", port: sshPort }, (reason) => problems.push(reason));
		link.start();
		try {
			await eventually(() => problems.length > 0, 10_000, "host key refused");
		} finally {
			link.stop();
		}
		expect(problems[0]).toMatch(/host key/);
		expect((await (await provisioner.api(`/tunnels/${id}`)).json()).status).toBe("pending");
		await provisioner.api(`/tunnels/${id}`, { method: "DELETE" });
	}, 60_000);
});
