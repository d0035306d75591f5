import type { IncomingMessage, ServerResponse } from "node:http";
import querystring from "node:querystring";
import { printParseErrorCode, visit, type ParseErrorCode } from "jsonc-parser";
import { Errors } from "moleculer";

/** Nesting deeper than this is no request body anyone writes by hand or by script. */
const MAX_DEPTH = 256;
/** As body-parser's urlencoded did: at most this many form fields. */
const MAX_FORM_FIELDS = 1000;

function invalidJson(reason: string): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError("the request body is not valid JSON", 400, "INVALID_JSON", { reason: `the body is not JSON: ${reason}` });
}

/** An own property even for "__proto__", as JSON.parse makes it (never the object's prototype). */
function setOwn(target: Record<string, unknown> | unknown[], key: string | number, value: unknown): void {
	Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * JSON with trailing commas forgiven; comments stay errors. The seed tutorial's own "Create
 * Globalnode" curl sends `"script": "…",\n}`; operators copy such bodies, and the intent is plain.
 * Strict JSON takes V8's parser (a 4 MiB body in ~25 ms); anything else one linear pass of
 * jsonc-parser (~20× slower, so not the first choice), whose first error ends it with a 400.
 */
export function parseLenientJson(text: string): unknown {
	try {
		return JSON.parse(text);
	} catch {
		return parseWithTrailingCommas(text);
	}
}

function parseWithTrailingCommas(text: string): unknown {
	const stack: (Record<string, unknown> | unknown[])[] = [];
	const keys: (string | null)[] = [];
	let root: unknown;
	let key: string | null = null;
	const put = (value: unknown) => {
		const parent = stack[stack.length - 1];
		if (!parent) root = value;
		else if (Array.isArray(parent)) parent.push(value);
		else setOwn(parent, key!, value);
	};
	const open = (container: Record<string, unknown> | unknown[]) => {
		if (stack.length >= MAX_DEPTH) throw invalidJson(`nested deeper than ${MAX_DEPTH} levels`);
		put(container);
		stack.push(container);
		keys.push(key);
	};
	const close = () => {
		stack.pop();
		key = keys.pop() ?? null;
	};
	visit(
		text,
		{
			onObjectBegin: () => open({}),
			onArrayBegin: () => open([]),
			onObjectEnd: close,
			onArrayEnd: close,
			onObjectProperty: (property) => {
				key = property;
			},
			onLiteralValue: put,
			onError: (error: ParseErrorCode, offset: number) => {
				throw invalidJson(`${printParseErrorCode(error)} at offset ${offset}`);
			},
		},
		{ allowTrailingComma: true, disallowComments: true, allowEmptyContent: false },
	);
	return root;
}

function parseBody(contentType: string, text: string): unknown {
	if (text.trim() === "") return {};
	if (/^application\/x-www-form-urlencoded\b/i.test(contentType)) return { ...querystring.parse(text, "&", "=", { maxKeys: MAX_FORM_FIELDS }) };
	return parseLenientJson(text);
}

const PARSED_TYPES = /^application\/((.+\+)?json|x-www-form-urlencoded)\b/i;

/**
 * The gateway's body parser for JSON and form bodies: at most `limitOf(req)` bytes (the request
 * gate sets the limit per caller before anything is read), clear 400/413 errors. A body over the
 * limit is not read further: the error closes the connection.
 */
export function requestBody(limitOf: (req: IncomingMessage) => number) {
	return (req: IncomingMessage & { body?: unknown }, res: ServerResponse, next: (err?: unknown) => void): void => {
		const contentType = req.headers["content-type"] ?? "";
		if (!PARSED_TYPES.test(contentType)) return next();
		const limit = limitOf(req);
		const chunks: Buffer[] = [];
		let size = 0;
		let done = false;
		const finish = (err?: unknown) => {
			if (done) return;
			done = true;
			if (err) res.setHeader("Connection", "close");
			next(err);
		};
		req.on("data", (chunk: Buffer) => {
			if (done) return;
			size += chunk.length;
			if (size > limit) {
				req.pause();
				return finish(new Errors.MoleculerClientError(`the request body is larger than ${limit} bytes`, 413, "PAYLOAD_TOO_LARGE", { limit }));
			}
			chunks.push(chunk);
		});
		req.on("error", finish);
		req.on("aborted", () => finish(new Errors.MoleculerClientError("the request body was cut off", 400, "ABORTED")));
		req.on("end", () => {
			if (done) return;
			try {
				req.body = parseBody(contentType, Buffer.concat(chunks).toString("utf8"));
			} catch (err) {
				return finish(err instanceof RangeError ? invalidJson("nested too deeply") : err);
			}
			finish();
		});
	};
}
