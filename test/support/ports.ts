import net from "node:net";

/** A free TCP port on 127.0.0.1 (the OS picks it; we release it for the server to take). */
export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			const { port } = server.address() as net.AddressInfo;
			server.close(() => resolve(port));
		});
	});
}

/** Resolves once host:port accepts TCP connections; bounded by timeoutMs. */
export async function waitForPort(port: number, timeoutMs = 15_000, host = "127.0.0.1"): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const open = await new Promise<boolean>((resolve) => {
			const socket = net.createConnection({ host, port });
			socket.once("connect", () => {
				socket.end();
				resolve(true);
			});
			socket.once("error", () => resolve(false));
		});
		if (open) return;
		if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
		await new Promise((r) => setTimeout(r, 50));
	}
}

/** Poll `check` until it returns a value other than undefined/false; bounded by timeoutMs. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, what = "condition"): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	let lastError: unknown;
	for (;;) {
		try {
			const value = await check();
			if (value !== undefined && value !== false) return value as T;
		} catch (err) {
			lastError = err;
		}
		if (Date.now() > deadline) throw new Error(`${what} not reached after ${timeoutMs} ms${lastError ? `: ${String(lastError)}` : ""}`);
		await new Promise((r) => setTimeout(r, 100));
	}
}
