import type { IncomingMessage, ServerResponse } from "node:http";
import { Errors } from "moleculer";

/**
 * Drop commas that stand right before a closing } or ], outside strings. The seed tutorial's own
 * "Create Globalnode" curl sends `"script": "…",\n}`; operators copy such bodies, and the intent is
 * plain. Anything else that is not JSON stays an error.
 */
export function withoutTrailingCommas(text: string): string {
	let out = "";
	let inString = false;
	for (let i = 0; i < text.length; i++) {
		const char = text[i]!;
		if (inString) {
			out += char;
			if (char === "\\") out += text[++i] ?? "";
			else if (char === '"') inString = false;
			continue;
		}
		if (char === '"') inString = true;
		if (char === ",") {
			let j = i + 1;
			while (j < text.length && /\s/.test(text[j]!)) j++;
			if (text[j] === "}" || text[j] === "]") continue;
		}
		out += char;
	}
	return out;
}

function parse(text: string): unknown {
	try {
		return JSON.parse(text);
	} catch (err) {
		try {
			return JSON.parse(withoutTrailingCommas(text));
		} catch {
			throw new Errors.MoleculerClientError("the request body is not valid JSON", 400, "INVALID_JSON", { reason: `the body is not JSON: ${(err as Error).message}` });
		}
	}
}

/** The gateway's JSON body parser: bounded size, clear 400/413 errors, trailing commas forgiven. */
export function jsonBody(limitBytes: number) {
	return (req: IncomingMessage & { body?: unknown }, _res: ServerResponse, next: (err?: unknown) => void): void => {
		if (!/^application\/(.+\+)?json\b/i.test(req.headers["content-type"] ?? "")) return next();
		const chunks: Buffer[] = [];
		let size = 0;
		let failed = false;
		req.on("data", (chunk: Buffer) => {
			if (failed) return;
			size += chunk.length;
			if (size > limitBytes) {
				failed = true;
				next(new Errors.MoleculerClientError(`the request body is larger than BODY_LIMIT (${limitBytes} bytes)`, 413, "PAYLOAD_TOO_LARGE", { limit: limitBytes }));
				req.resume();
				return;
			}
			chunks.push(chunk);
		});
		req.on("error", (err) => {
			if (!failed) next(err);
			failed = true;
		});
		req.on("end", () => {
			if (failed) return;
			const text = Buffer.concat(chunks).toString("utf8");
			try {
				req.body = text.trim() === "" ? {} : parse(text);
				next();
			} catch (err) {
				next(err);
			}
		});
	};
}
