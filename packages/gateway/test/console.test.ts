import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { consoleFile, consoleRequests } from "../src/console";

interface Answer {
	status: number;
	headers: http.IncomingHttpHeaders;
	body: string;
}

/** A raw request: the path goes on the wire exactly as given (no client-side normalisation). */
function request(port: number, rawPath: string, method = "GET"): Promise<Answer> {
	return new Promise((resolve, reject) => {
		const req = http.request({ host: "127.0.0.1", port, path: rawPath, method }, (res) => {
			const chunks: Buffer[] = [];
			res.on("data", (chunk: Buffer) => chunks.push(chunk));
			res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
		});
		req.on("error", reject);
		req.setTimeout(5000, () => req.destroy(new Error(`timeout on ${rawPath}`)));
		req.end();
	});
}

/** The gateway's console handler in front of a stand-in for the API that answers 418. */
async function serve(root: string): Promise<{ port: number; close: () => Promise<void> }> {
	const server = http.createServer(
		consoleRequests(root, (_req, res) => {
			res.writeHead(418, { "Content-Type": "text/plain" });
			res.end("api");
		}),
	);
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe("the web console's static files (gateway)", () => {
	const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-console-static-"));
	const root = path.join(scratch, "web");
	const INDEX = "<!doctype html><title>console</title>";
	const SECRET = "not for the web";
	let server: { port: number; close: () => Promise<void> };

	beforeAll(async () => {
		fs.mkdirSync(path.join(root, "assets"), { recursive: true });
		fs.writeFileSync(path.join(root, "index.html"), INDEX);
		fs.writeFileSync(path.join(root, "assets", "index-Ab12.js"), "console.log(1)");
		fs.writeFileSync(path.join(root, "assets", "index-Ab12.css"), "body{}");
		fs.writeFileSync(path.join(root, "assets", "logo.svg"), "<svg/>");
		fs.writeFileSync(path.join(root, ".hidden"), SECRET);
		// Beside the root, sharing its name as a prefix: "web-secret" starts with "web".
		fs.mkdirSync(path.join(scratch, "web-secret"));
		fs.writeFileSync(path.join(scratch, "web-secret", "key"), SECRET);
		fs.writeFileSync(path.join(scratch, "secret.txt"), SECRET);
		server = await serve(root);
	});

	afterAll(async () => {
		await server?.close();
		fs.rmSync(scratch, { recursive: true, force: true });
	});

	it("redirects / and /console to /console/", async () => {
		for (const p of ["/", "/console", "/?x=1"]) {
			const answer = await request(server.port, p);
			expect({ p, status: answer.status, location: answer.headers.location }).toEqual({ p, status: 302, location: "/console/" });
		}
	});

	it("serves index.html with the page's security headers, revalidated on every load", async () => {
		const answer = await request(server.port, "/console/");
		expect(answer.status).toBe(200);
		expect(answer.body).toBe(INDEX);
		expect(answer.headers["content-type"]).toBe("text/html; charset=utf-8");
		expect(answer.headers["cache-control"]).toBe("no-cache");
		expect(answer.headers["content-security-policy"]).toContain("default-src 'self'");
		expect(answer.headers["x-frame-options"]).toBe("DENY");
	});

	it("serves hashed assets with their content types, cached for good", async () => {
		const cases: [string, string][] = [
			["/console/assets/index-Ab12.js", "text/javascript; charset=utf-8"],
			["/console/assets/index-Ab12.css", "text/css; charset=utf-8"],
			["/console/assets/logo.svg", "image/svg+xml"],
		];
		for (const [p, type] of cases) {
			const answer = await request(server.port, p);
			expect({ p, status: answer.status, type: answer.headers["content-type"], cache: answer.headers["cache-control"], nosniff: answer.headers["x-content-type-options"] }).toEqual({
				p,
				status: 200,
				type,
				cache: "public, max-age=31536000, immutable",
				nosniff: "nosniff",
			});
		}
	});

	it("answers client routes with index.html, and missing assets with 404", async () => {
		for (const p of ["/console/builds", "/console/registries/mainscripts", "/console/builds?id=3"]) {
			const answer = await request(server.port, p);
			expect({ p, status: answer.status, body: answer.body, cache: answer.headers["cache-control"] }).toEqual({ p, status: 200, body: INDEX, cache: "no-cache" });
		}
		const missing = await request(server.port, "/console/assets/gone-123.js");
		expect(missing.status).toBe(404);
		expect(missing.body).not.toContain("<!doctype");
	});

	it("refuses every way out of the root, and hidden files", async () => {
		const attempts = [
			"/console/../secret.txt",
			"/console/../../etc/passwd",
			"/console/assets/../../secret.txt",
			"/console/%2e%2e/secret.txt",
			"/console/%2E%2E%2Fsecret.txt",
			"/console/..%2fsecret.txt",
			"/console/..%5csecret.txt",
			"/console/%2e%2e/web-secret/key",
			"/console/..%2f..%2f..%2f..%2fetc%2fpasswd",
			"/console/%2fetc%2fpasswd",
			"//console/../secret.txt",
			"/console/.hidden",
			"/console/assets/%00.js",
			"/console/%E0%A4%A",
		];
		for (const p of attempts) {
			const answer = await request(server.port, p);
			expect({ p, leaked: answer.body.includes(SECRET) || answer.body.includes("root:"), ok: answer.status === 200 && answer.body !== INDEX }).toEqual({ p, leaked: false, ok: false });
			expect(answer.status).toBeLessThan(500);
		}
	});

	it("maps URL paths to files inside the root only", () => {
		expect(consoleFile(root, "/console/")).toBe(path.join(root, "index.html"));
		expect(consoleFile(root, "/console/assets/a.js")).toBe(path.join(root, "assets", "a.js"));
		expect(consoleFile(root, "/console/%2e%2e/secret.txt")).toBeNull();
		expect(consoleFile(root, "/console/%2fetc/passwd")).toBeNull();
		expect(consoleFile(root, "/console/a%00b")).toBeNull();
	});

	it("is read-only: HEAD has headers and no body, other methods get 405", async () => {
		const head = await request(server.port, "/console/assets/index-Ab12.js", "HEAD");
		expect(head.status).toBe(200);
		expect(head.headers["content-length"]).toBe(String("console.log(1)".length));
		expect(head.body).toBe("");
		for (const method of ["POST", "PUT", "DELETE"]) {
			const answer = await request(server.port, "/console/", method);
			expect({ method, status: answer.status, allow: answer.headers.allow }).toEqual({ method, status: 405, allow: "GET, HEAD" });
		}
	});

	it("leaves everything else to the API", async () => {
		for (const p of ["/api/health", "/consoles", "/console.js", "/favicon.ico"]) {
			expect({ p, status: (await request(server.port, p)).status }).toEqual({ p, status: 418 });
		}
		// Writes to / are not redirected: the API answers them (404 there).
		expect((await request(server.port, "/", "POST")).status).toBe(418);
	});

	it("answers 503 saying how to build it when the console is not built", async () => {
		const unbuilt = await serve(path.join(scratch, "not-built"));
		try {
			for (const p of ["/console/", "/console/builds", "/console/assets/index-Ab12.js"]) {
				const answer = await request(unbuilt.port, p);
				expect({ p, status: answer.status, type: answer.headers["content-type"] }).toEqual({ p, status: 503, type: "text/plain; charset=utf-8" });
				expect(answer.body).toMatch(/not built/);
				expect(answer.body).toContain("npm run build");
			}
			expect((await request(unbuilt.port, "/api/health")).status).toBe(418);
		} finally {
			await unbuilt.close();
		}
	});
});
