import net from "node:net";
import { Client } from "ssh2";
import type { TunnelGrant } from "@clusterplatform/tunnels";
import { freePort } from "@clusterplatform/test-kit/ports";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";

const AUTH_TIMEOUT_S = 2;
const MAX_UNAUTHENTICATED = 50;
const MAX_CONNECTIONS = 50;

/** An idle TCP connection to the SSH port (never says a word); `closedAfter` resolves with the ms it lived. */
function idleConnection(port: number): Promise<{ socket: net.Socket; closedAfter: Promise<number> }> {
	return new Promise((resolve, reject) => {
		const opened = Date.now();
		const socket = net.connect(port, "127.0.0.1");
		const closedAfter = new Promise<number>((done) => socket.once("close", () => done(Date.now() - opened)));
		socket.on("error", () => undefined);
		// Read (and drop) the server's greeting, else the socket never sees the server close it.
		socket.resume();
		socket.once("connect", () => resolve({ socket, closedAfter }));
		socket.once("error", reject);
	});
}

/** Whether a connection is still open after `ms` (false: the server closed it). */
async function stillOpenAfter(connection: { closedAfter: Promise<number> }, ms: number): Promise<boolean> {
	return Promise.race([connection.closedAfter.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), ms))]);
}

function login(port: number, username: string, password: string): Promise<Client> {
	return new Promise((resolve, reject) => {
		const client = new Client();
		const timer = setTimeout(() => (client.end(), reject(new Error("ssh login timed out"))), 10_000);
		client.once("ready", () => (clearTimeout(timer), resolve(client)));
		client.once("error", (err) => (clearTimeout(timer), client.end(), reject(err)));
		client.connect({ host: "127.0.0.1", port, username, password, readyTimeout: 10_000 });
	});
}

/**
 * Finding 8: the tunnel endpoint faces the internet. Idle connections are cut after the login
 * timeout, and past the caps a new connection is closed at once instead of being held.
 */
describe("tunnel-server connection limits", () => {
	let provisioner: TestProvisioner;
	let sshPort: number;
	const open: net.Socket[] = [];

	beforeAll(async () => {
		sshPort = await freePort();
		provisioner = await startTestProvisioner({
			services: ["tunnels", "tunnel-server"],
			env: {
				TUNNEL_SSH_PORT: String(sshPort),
				TUNNEL_SSH_HOST: "127.0.0.1",
				TUNNEL_PUBLIC_HOST: "127.0.0.1",
				TUNNEL_PORT_RANGE: `${await freePort()}-65000`,
				TUNNEL_AUTH_TIMEOUT: String(AUTH_TIMEOUT_S),
				TUNNEL_MAX_UNAUTHENTICATED: String(MAX_UNAUTHENTICATED),
				TUNNEL_MAX_CONNECTIONS: String(MAX_CONNECTIONS),
			},
		});
	}, 60_000);
	afterEach(() => {
		for (const socket of open.splice(0)) socket.destroy();
	});
	afterAll(() => provisioner?.stop());

	async function idle(count: number) {
		const connections = [];
		for (let i = 0; i < count; i++) connections.push(await idleConnection(sshPort));
		open.push(...connections.map((c) => c.socket));
		return connections;
	}

	it(`cuts ${MAX_UNAUTHENTICATED} idle connections after the ${AUTH_TIMEOUT_S} s login timeout`, async () => {
		const connections = await idle(MAX_UNAUTHENTICATED);
		const lived = await Promise.all(connections.map((c) => c.closedAfter));
		console.log(`${connections.length} idle connections closed after ${Math.min(...lived)}..${Math.max(...lived)} ms (timeout ${AUTH_TIMEOUT_S} s)`);
		expect(Math.min(...lived)).toBeGreaterThanOrEqual(AUTH_TIMEOUT_S * 1000 - 500);
		expect(Math.max(...lived)).toBeLessThan(AUTH_TIMEOUT_S * 1000 + 2000);
	}, 30_000);

	it(`closes a connection at once while ${MAX_UNAUTHENTICATED} wait to log in`, async () => {
		const waiting = await idle(MAX_UNAUTHENTICATED);
		const [extra] = await idle(1);
		const refusedAfter = await Promise.race([extra!.closedAfter, new Promise<number>((resolve) => setTimeout(() => resolve(Infinity), 1000))]);
		console.log(`connection past the cap closed after ${refusedAfter} ms`);
		expect(refusedAfter).toBeLessThan(1000);
		expect(await stillOpenAfter(waiting[0]!, 100)).toBe(true);
		await Promise.all(waiting.map((c) => c.closedAfter));
	}, 30_000);

	it("keeps a logged-in client past the timeout, and counts it toward TUNNEL_MAX_CONNECTIONS", async () => {
		const created = await provisioner.broker.call("tunnels.create", { artifactId: "site.limits", target: "127.0.0.1:9" });
		const [grant] = (await provisioner.broker.call("tunnels.siteTunnels", { artifactId: "site.limits" })) as TunnelGrant[];
		expect(grant!.id).toBe((created as { id: number }).id);
		const client = await login(sshPort, `tunnel-${grant!.id}`, grant!.token);
		const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
		try {
			await new Promise((resolve) => setTimeout(resolve, AUTH_TIMEOUT_S * 1000 + 1000));
			expect(await Promise.race([closed.then(() => "closed"), Promise.resolve("open")])).toBe("open");

			// One logged in and 49 waiting make 50 connections: the next is refused by the total cap,
			// although fewer than TUNNEL_MAX_UNAUTHENTICATED wait.
			const waiting = await idle(MAX_CONNECTIONS - 1);
			const extra = await idleConnection(sshPort).catch(() => null);
			if (extra) {
				open.push(extra.socket);
				expect(await stillOpenAfter(extra, 1000)).toBe(false);
			}
			expect(await stillOpenAfter(waiting[0]!, 100)).toBe(true);
		} finally {
			client.end();
		}
	}, 30_000);

	it("cuts a connection after 3 wrong passwords", async () => {
		const created = (await provisioner.broker.call("tunnels.create", { artifactId: "site.limits", target: "127.0.0.1:9" })) as { id: number };
		const client = new Client();
		const attempts: string[] = [];
		const ended = new Promise<void>((resolve) => client.once("close", () => resolve()));
		client.on("error", () => undefined);
		client.connect({
			host: "127.0.0.1",
			port: sshPort,
			username: `tunnel-${created.id}`,
			readyTimeout: 10_000,
			// Offers a wrong password again and again; the server must end it.
			authHandler: (_methodsLeft, _partial, next) => {
				attempts.push("password");
				if (attempts.length > 10) return next(false as never);
				next({ type: "password", username: `tunnel-${created.id}`, password: `wrong-${attempts.length}` });
			},
		});
		await ended;
		expect(attempts.length).toBeLessThanOrEqual(4);
	}, 20_000);
});
