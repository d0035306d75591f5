import fs from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { CONSOLE_BUILD_HINT, CONSOLE_PATH, consoleBuilt } from "@clusterplatform/console";

const CONTENT_TYPES: Record<string, string> = {
	".html": "text/html; charset=utf-8",
	".js": "text/javascript; charset=utf-8",
	".mjs": "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".json": "application/json; charset=utf-8",
	".map": "application/json; charset=utf-8",
	".svg": "image/svg+xml",
	".png": "image/png",
	".ico": "image/x-icon",
	".woff2": "font/woff2",
	".txt": "text/plain; charset=utf-8",
};

/** Vite names everything under assets/ by content hash: such a URL never changes meaning. */
const IMMUTABLE = "public, max-age=31536000, immutable";

/**
 * The page holds the operator's token (sessionStorage): it runs only its own scripts, talks only to
 * its own origin and is never framed.
 */
const PAGE_HEADERS = {
	"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
	"X-Frame-Options": "DENY",
	"Referrer-Policy": "no-referrer",
};

type Listener = (req: IncomingMessage, res: ServerResponse) => void;

function sendText(res: ServerResponse, code: number, text: string, headers: Record<string, string> = {}): void {
	res.writeHead(code, { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", ...headers });
	res.end(`${text}\n`);
}

function redirect(res: ServerResponse, location: string): void {
	res.writeHead(302, { Location: location, "Cache-Control": "no-store" });
	res.end();
}

/**
 * The file under `root` a console URL path names, or null when it leaves root or cannot be a file
 * name (NUL bytes, bad escapes). Hidden names (".x") are not served either.
 */
export function consoleFile(root: string, urlPath: string): string | null {
	let relative: string;
	try {
		relative = decodeURIComponent(urlPath.slice(CONSOLE_PATH.length));
	} catch {
		return null;
	}
	if (relative.includes("\0") || relative.includes("\\")) return null;
	if (relative.split("/").some((segment) => segment.startsWith("."))) return null;
	const file = path.resolve(root, relative || "index.html");
	return file.startsWith(root + path.sep) ? file : null;
}

async function regularFile(file: string): Promise<fs.Stats | null> {
	try {
		const stat = await fs.promises.stat(file);
		return stat.isFile() ? stat : null;
	} catch {
		return null;
	}
}

async function sendFile(req: IncomingMessage, res: ServerResponse, file: string, stat: fs.Stats, immutable: boolean): Promise<void> {
	const extension = path.extname(file).toLowerCase();
	res.writeHead(200, {
		"Content-Type": CONTENT_TYPES[extension] ?? "application/octet-stream",
		"Content-Length": String(stat.size),
		"Cache-Control": immutable ? IMMUTABLE : "no-cache",
		"X-Content-Type-Options": "nosniff",
		...(extension === ".html" ? PAGE_HEADERS : {}),
	});
	if (req.method === "HEAD") {
		res.end();
		return;
	}
	await pipeline(fs.createReadStream(file), res);
}

/** Serve one request below /console/ from `root`. */
async function serveConsole(root: string, req: IncomingMessage, res: ServerResponse, urlPath: string): Promise<void> {
	if (req.method !== "GET" && req.method !== "HEAD") return sendText(res, 405, "The web console is static: GET or HEAD only.", { Allow: "GET, HEAD" });
	if (!consoleBuilt(root)) {
		return sendText(res, 503, `The web console is not built (no ${path.join(root, "index.html")}).\nBuild it with: ${CONSOLE_BUILD_HINT}\nThe API under /api works without it.`);
	}
	const file = consoleFile(root, urlPath);
	if (!file) return sendText(res, 404, "Not found.");
	const stat = await regularFile(file);
	if (stat) return sendFile(req, res, file, stat, urlPath.startsWith(`${CONSOLE_PATH}assets/`));
	// A missing file with an extension is a missing asset; anything else is a client-side route.
	if (path.extname(file) !== "") return sendText(res, 404, "Not found.");
	const index = path.join(root, "index.html");
	return sendFile(req, res, index, (await regularFile(index))!, false);
}

/**
 * The web console's static files, in front of the API: /console/* from `root` (index.html for client
 * routes), / and /console redirect to /console/. Anonymous: the files hold no data, the page asks
 * /api for everything with the operator's token. Everything else goes on to `next` untouched, so
 * these paths are not part of the API (nor of /api/openapi.json).
 */
export function consoleRequests(root: string, next: Listener): Listener {
	const resolvedRoot = path.resolve(root);
	return (req, res) => {
		const urlPath = (req.url ?? "/").split("?")[0]!;
		if (urlPath === "/" || urlPath === "/console") {
			if (req.method !== "GET" && req.method !== "HEAD") return next(req, res);
			return redirect(res, CONSOLE_PATH);
		}
		if (!urlPath.startsWith(CONSOLE_PATH)) return next(req, res);
		serveConsole(resolvedRoot, req, res, urlPath).catch((err: Error) => {
			if (!res.headersSent) sendText(res, 500, `Could not read the console's files: ${err.message}`);
			else res.destroy(err);
		});
	};
}
