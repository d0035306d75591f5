import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { assertKey, type ObjectStore } from "@clusterplatform/core";

const CONTENT_TYPES: Record<string, string> = {
	iso: "application/x-iso9660-image",
	zip: "application/zip",
	json: "application/json",
	ipxe: "text/plain; charset=utf-8",
};

function sendJson(res: ServerResponse, code: number, body: unknown): void {
	res.writeHead(code, { "Content-Type": "application/json; charset=utf-8" });
	res.end(JSON.stringify(body));
}

/**
 * GET/HEAD /api/artifacts/<key>: artifacts of the file store, for booting hosts and downloads.
 * Read-only: nothing here writes, and keys are checked before they touch the file system.
 */
export function artifactHandler(store: () => ObjectStore) {
	return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
		if (req.method !== "GET" && req.method !== "HEAD") {
			sendJson(res, 405, { name: "MethodNotAllowed", message: "artifacts are read-only", code: 405, type: "METHOD_NOT_ALLOWED" });
			return;
		}
		let key: string;
		try {
			key = decodeURIComponent((req.url ?? "").split("?")[0]!.replace(/^\/+/, ""));
		} catch {
			sendJson(res, 400, { name: "BadRequestError", message: "the artifact key has a malformed percent-escape", code: 400, type: "MALFORMED_URL" });
			return;
		}
		try {
			assertKey(key);
		} catch {
			sendJson(res, 404, { name: "NotFoundError", message: "artifact not found", code: 404, type: "NOT_FOUND" });
			return;
		}
		const stat = await store().stat(key);
		if (!stat) {
			sendJson(res, 404, { name: "NotFoundError", message: `artifact ${key} not found`, code: 404, type: "NOT_FOUND", data: { key } });
			return;
		}
		const extension = key.split(".").pop() ?? "";
		res.writeHead(200, {
			"Content-Type": CONTENT_TYPES[extension] ?? "application/octet-stream",
			"Content-Length": String(stat.size),
			"Content-Disposition": `attachment; filename="${key.split("/").pop()}"`,
		});
		if (req.method === "HEAD") {
			res.end();
			return;
		}
		await pipeline(await store().getStream(key), res);
	};
}
