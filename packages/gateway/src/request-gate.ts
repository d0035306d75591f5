import type { IncomingMessage, ServerResponse } from "node:http";
import { Errors as MoleculerErrors } from "moleculer";
import { Errors } from "moleculer-web";
import type { AccessControl } from "./access";
import { API_PREFIX, machineRequest } from "./machine-path";

type Listener = (req: IncomingMessage, res: ServerResponse) => void;
type SendError = (req: IncomingMessage, res: ServerResponse, err: Error) => void;

/** How long a refused request's unread body is drained (so the client reads the answer) before the connection goes. */
const LINGER_MS = 2000;

const BODY_LIMIT = Symbol("bodyLimit");

/** The body limit the gate decided for this request (see requestBody in json-body.ts). */
export function bodyLimitOf(req: IncomingMessage, fallback: number): number {
	return (req as IncomingMessage & { [BODY_LIMIT]?: number })[BODY_LIMIT] ?? fallback;
}

/** True when every percent-escape of the URL (path and query) decodes to UTF-8. */
export function wellFormedUrl(url: string): boolean {
	if (!url.includes("%")) return true;
	try {
		decodeURIComponent(url);
		return true;
	} catch {
		return false;
	}
}

function underApi(url: string): boolean {
	return url === API_PREFIX || url.startsWith(`${API_PREFIX}/`) || url.startsWith(`${API_PREFIX}?`);
}

export interface GateOptions {
	access: AccessControl;
	/** BODY_LIMIT: what a caller with a token may send. */
	bodyLimit: number;
	/** The machine listener (MACHINE_PORT): only the machine path exists there. */
	machineOnly: boolean;
	sendError: SendError;
}

/**
 * In front of moleculer-web, before a byte of the body is read: malformed URLs get 400, callers
 * who may not make this request get 401/403 (access.ts), and the body limit is chosen — BODY_LIMIT
 * with a token, the machine-path row's small limit without one. A refused request's body is never
 * read into memory or parsed; its connection is closed after the answer.
 */
export function requestGate(options: GateOptions, next: Listener): Listener {
	const refuse = (req: IncomingMessage, res: ServerResponse, err: Error) => {
		res.setHeader("Connection", "close");
		res.once("finish", () => {
			if (!req.complete) setTimeout(() => req.socket.destroy(), LINGER_MS).unref();
		});
		options.sendError(req, res, err);
	};
	return (req, res) => {
		const url = req.url ?? "/";
		const machine = machineRequest(req);
		if (options.machineOnly && !machine) {
			return refuse(req, res, new Errors.NotFoundError("NOT_FOUND", { hint: "this listener (MACHINE_PORT) serves only the machine path" }));
		}
		if (!underApi(url)) return next(req, res);
		if (!wellFormedUrl(url)) {
			return refuse(req, res, new MoleculerErrors.MoleculerClientError("the URL has a malformed percent-escape: % must start two hex digits that form UTF-8", 400, "MALFORMED_URL"));
		}
		let caller: ReturnType<AccessControl["authorize"]>;
		try {
			caller = options.access.authorize(req);
		} catch (err) {
			return refuse(req, res, err as Error);
		}
		const limit = caller ? options.bodyLimit : (machine?.route.bodyLimit ?? 0);
		const declared = Number(req.headers["content-length"] ?? 0);
		if (declared > limit) {
			return refuse(req, res, new MoleculerErrors.MoleculerClientError(`the request body is larger than ${limit} bytes${caller ? "" : " (without a token)"}`, 413, "PAYLOAD_TOO_LARGE", { limit }));
		}
		(req as IncomingMessage & { [BODY_LIMIT]?: number })[BODY_LIMIT] = limit;
		next(req, res);
	};
}
