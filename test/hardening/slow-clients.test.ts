import net from "node:net";
import { ConfigError, loadConfig } from "@clusterplatform/core";
import { freePort } from "../support/ports";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "../support/provisioner";

/**
 * Slowloris against the gateway (finding 9): requests dribbled a byte at a time were held 300 s,
 * and connections had no cap. With REQUEST_TIMEOUT / HEADERS_TIMEOUT / MAX_CONNECTIONS set short
 * here, the gateway must cut dribblers within the bound and refuse connections beyond the cap, on
 * the main and the machine listener alike.
 */

const REQUEST_TIMEOUT_S = 3;
const HEADERS_TIMEOUT_S = 2;
const MAX_CONNECTIONS = 12;

interface Dribble {
	/** ms from the first byte until the server closed the connection. */
	heldMs: number;
	/** What the server said before closing, if anything. */
	answer: string;
	bytesSent: number;
}

/** Send `head`, then one byte of `rest` every `everyMs`, until the server closes (bounded by `giveUpMs`). */
function dribble(port: number, head: string, rest: string, everyMs = 200, giveUpMs = 20_000): Promise<Dribble> {
	return new Promise((resolve) => {
		const socket = net.createConnection({ host: "127.0.0.1", port });
		let answer = "";
		let bytesSent = 0;
		let started = 0;
		let ticker: NodeJS.Timeout | undefined;
		const giveUp = setTimeout(() => socket.destroy(), giveUpMs);
		socket.on("connect", () => {
			started = Date.now();
			socket.write(head);
			bytesSent = head.length;
			let at = 0;
			ticker = setInterval(() => {
				if (socket.destroyed || !socket.writable) return;
				socket.write(rest[at % rest.length]!);
				at++;
				bytesSent++;
			}, everyMs);
		});
		socket.on("data", (chunk) => {
			answer += chunk.toString("utf8");
		});
		socket.on("error", () => undefined);
		socket.on("close", () => {
			clearInterval(ticker);
			clearTimeout(giveUp);
			resolve({ heldMs: Date.now() - started, answer, bytesSent });
		});
	});
}

/** Open `count` connections that say nothing; resolves once all are connected. */
async function idleConnections(port: number, count: number): Promise<net.Socket[]> {
	return Promise.all(
		Array.from({ length: count }, () => new Promise<net.Socket>((resolve, reject) => {
			const socket = net.createConnection({ host: "127.0.0.1", port });
			socket.on("error", () => undefined);
			socket.once("connect", () => resolve(socket));
			socket.once("close", () => reject(new Error("closed before connecting")));
		})),
	);
}

/** One GET over a fresh connection (no keep-alive pool): its status, or "closed" when the server dropped it. */
function getOnce(port: number, url: string): Promise<number | "closed"> {
	return new Promise((resolve) => {
		const socket = net.createConnection({ host: "127.0.0.1", port });
		let received = "";
		const timer = setTimeout(() => socket.destroy(), 5000);
		socket.on("connect", () => socket.write(`GET ${url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
		socket.on("data", (chunk) => (received += chunk.toString("utf8")));
		socket.on("error", () => undefined);
		socket.on("close", () => {
			clearTimeout(timer);
			const status = /^HTTP\/1\.1 (\d{3})/.exec(received)?.[1];
			resolve(status ? Number(status) : "closed");
		});
	});
}

describe("listener settings", () => {
	it("defaults to a 30 s request bound, 10 s for headers, 4096 connections, a 10 s shutdown grace and no machine listener", () => {
		const config = loadConfig({ HOST: "10.1.2.3" });
		expect(config.http).toEqual({ requestTimeoutMs: 30_000, headersTimeoutMs: 10_000, maxConnections: 4096, shutdownGraceMs: 10_000 });
		expect(config.machineListener).toBeNull();
		expect(loadConfig({ HOST: "10.1.2.3", MACHINE_PORT: "8081" }).machineListener).toEqual({ port: 8081, host: "10.1.2.3" });
		expect(loadConfig({ MACHINE_PORT: "8081", MACHINE_HOST: "192.168.1.1" }).machineListener).toEqual({ port: 8081, host: "192.168.1.1" });
	});

	it("refuses bounds that make no sense, naming the variable", () => {
		expect(() => loadConfig({ REQUEST_TIMEOUT: "5", HEADERS_TIMEOUT: "10" })).toThrow(/HEADERS_TIMEOUT/);
		expect(() => loadConfig({ REQUEST_TIMEOUT: "0" })).toThrow(ConfigError);
		expect(() => loadConfig({ MAX_CONNECTIONS: "-1" })).toThrow(/MAX_CONNECTIONS/);
		expect(() => loadConfig({ SHUTDOWN_GRACE: "-1" })).toThrow(/SHUTDOWN_GRACE/);
		expect(() => loadConfig({ MACHINE_PORT: "http" })).toThrow(/MACHINE_PORT/);
	});
});

describe("slow and piled-up clients (finding 9)", () => {
	let provisioner: TestProvisioner;
	let machinePort: number;

	beforeAll(async () => {
		machinePort = await freePort();
		provisioner = await startTestProvisioner({
			services: ["gateway", "localnodes"],
			env: {
				REQUEST_TIMEOUT: String(REQUEST_TIMEOUT_S),
				HEADERS_TIMEOUT: String(HEADERS_TIMEOUT_S),
				MAX_CONNECTIONS: String(MAX_CONNECTIONS),
				MACHINE_PORT: String(machinePort),
			},
		});
	}, 60_000);
	afterAll(() => provisioner?.stop());

	it.each([
		["an operator's body on the main port", () => provisioner.port!, `POST /api/mainscripts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`, '{"text": "' + "a".repeat(1000)],
		["a registration's body on the machine port", () => machinePort, "POST /api/localnodes?ip=10.0.0.5&artifactId=site.slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n", '{"pingable": ' + " ".repeat(1000)],
		["headers on the main port", () => provisioner.port!, "GET /api/health HTTP/1.1\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
	])("cuts %s dribbled a byte every 200 ms within REQUEST_TIMEOUT", async (_what, port, head, rest) => {
		const cut = await dribble(port(), head, rest);
		console.log(`${_what}: cut after ${cut.heldMs} ms (${cut.bytesSent} bytes sent): ${cut.answer.split("\r\n")[0] || "(closed without an answer)"}`);
		expect(cut.heldMs).toBeLessThan((REQUEST_TIMEOUT_S + 2) * 1000);
		expect(cut.answer).toMatch(/^HTTP\/1\.1 408 /);
		expect(cut.answer).toMatch(/"type":"REQUEST_TIMEOUT"/);
	}, 30_000);

	it("lets a request that arrives in time through: bounds cut only the slow", async () => {
		expect(await getOnce(provisioner.port!, "/api/health")).toBe(200);
		expect(await getOnce(machinePort, "/api/health")).toBe(200);
	});

	it.each([
		["main", () => provisioner.port!],
		["machine", () => machinePort],
	])("closes connections beyond MAX_CONNECTIONS on the %s listener, and serves again once they go", async (_which, port) => {
		const held = await idleConnections(port(), MAX_CONNECTIONS);
		try {
			await new Promise((resolve) => setTimeout(resolve, 100)); // the server has accepted them all
			expect(await getOnce(port(), "/api/health")).toBe("closed");
		} finally {
			for (const socket of held) socket.destroy();
		}
		await new Promise((resolve) => setTimeout(resolve, 200));
		expect(await getOnce(port(), "/api/health")).toBe(200);
	});
});
