import fs from "node:fs";
import { CliError, EXIT, exitCodeOfStatus, usageError } from "./errors";

export const DEFAULT_URL = "http://127.0.0.1:3000";

export interface Connection {
	/** The gateway's origin, e.g. http://127.0.0.1:3000 (an /api suffix is dropped). */
	baseUrl: string;
	/** Bearer token; empty when the gateway runs with AUTH=off. */
	token: string;
}

/** --url, else CLUSTERPLATFORM_URL, else the embedded default; --token, --token-file, CLUSTERPLATFORM_TOKEN, CLUSTERPLATFORM_TOKEN_FILE. */
export function connectionFrom(options: { url?: string; token?: string; tokenFile?: string }, env: NodeJS.ProcessEnv): Connection {
	const raw = options.url ?? env.CLUSTERPLATFORM_URL ?? DEFAULT_URL;
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		usageError(`--url/CLUSTERPLATFORM_URL must be an http(s) URL like ${DEFAULT_URL}, got "${raw}"`);
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") usageError(`--url/CLUSTERPLATFORM_URL must be http:// or https://, got "${raw}"`);
	const baseUrl = `${url.origin}${url.pathname.replace(/\/+$/, "").replace(/\/api$/, "")}`;
	const tokenFile = options.tokenFile ?? (options.token === undefined ? env.CLUSTERPLATFORM_TOKEN_FILE : undefined);
	let token = options.token ?? (tokenFile === undefined ? env.CLUSTERPLATFORM_TOKEN : undefined) ?? "";
	if (tokenFile !== undefined) {
		try {
			token = fs.readFileSync(tokenFile, "utf8");
		} catch (err) {
			usageError(`cannot read the token file ${tokenFile}: ${(err as Error).message}`);
		}
	}
	return { baseUrl, token: token.trim() };
}

export interface RequestOptions {
	method?: string;
	json?: unknown;
	query?: [string, string][];
	/** Milliseconds before the request is given up (exit 5). */
	timeoutMs?: number;
}

interface ApiErrorBody {
	name?: string;
	message?: string;
	code?: number;
	data?: unknown;
}

function problemsOf(body: ApiErrorBody): { field: string; message: string }[] {
	if (!Array.isArray(body.data)) return [];
	return body.data
		.filter((d): d is { field: string; message?: string } => d && typeof d === "object" && typeof d.field === "string")
		.map((d) => ({ field: d.field, message: (d.message ?? "is invalid").replace(new RegExp(`^The '${d.field.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}' field `), "") }));
}

/** Why fetch failed, from its cause chain (ECONNREFUSED, ENOTFOUND, …). */
function networkReason(err: unknown): string {
	let cause = err as { cause?: unknown; code?: string; message?: string } | undefined;
	while (cause?.cause) cause = cause.cause as typeof cause;
	return cause?.code ? `${cause.code}${cause.message ? ` (${cause.message})` : ""}` : String(cause?.message ?? err);
}

/** The gateway's REST API, as the CLI uses it: JSON in, JSON out, errors as CliError with an exit code. */
export class ApiClient {
	constructor(readonly connection: Connection) {}

	headers(extra: Record<string, string> = {}): Record<string, string> {
		return { ...(this.connection.token ? { Authorization: `Bearer ${this.connection.token}` } : {}), ...extra };
	}

	/** A URL under the gateway; the token is only ever sent there. */
	isOwnUrl(url: string): boolean {
		return url.startsWith(`${this.connection.baseUrl}/`);
	}

	async fetch(url: string, init: RequestInit & { timeoutMs?: number } = {}): Promise<Response> {
		const { timeoutMs, ...rest } = init;
		try {
			return await fetch(url, { ...rest, signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : rest.signal });
		} catch (err) {
			if ((err as Error).name === "TimeoutError") throw new CliError(`${rest.method ?? "GET"} ${url}: no answer within ${timeoutMs} ms`, EXIT.timeout);
			throw new CliError(`cannot reach the gateway at ${this.connection.baseUrl}: ${networkReason(err)}`, EXIT.unreachable);
		}
	}

	/** A request under /api whose answer was 2xx (its body unread); anything else becomes a CliError naming what the API said. */
	async send(path: string, options: RequestOptions & { accept?: string } = {}): Promise<Response> {
		const query = options.query?.length ? `?${new URLSearchParams(options.query).toString()}` : "";
		const url = `${this.connection.baseUrl}/api${path}${query}`;
		const method = options.method ?? "GET";
		const response = await this.fetch(url, {
			method,
			headers: this.headers({ Accept: options.accept ?? "application/json", ...(options.json !== undefined ? { "Content-Type": "application/json" } : {}) }),
			body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
			timeoutMs: options.timeoutMs ?? 60_000,
		});
		if (!response.ok) throw this.errorOf(method, path, response.status, await this.text(response, method, url));
		return response;
	}

	/** A response's body as text; a timeout or a broken connection while reading it is a CliError too. */
	async text(response: Response, method: string, url: string): Promise<string> {
		try {
			return await response.text();
		} catch (err) {
			if ((err as Error).name === "TimeoutError") throw new CliError(`${method} ${url}: the answer did not arrive in time`, EXIT.timeout);
			throw new CliError(`${method} ${url}: the answer broke off: ${networkReason(err)}`, EXIT.unreachable);
		}
	}

	/** A JSON request under /api: the parsed answer. */
	async request<T = any>(path: string, options: RequestOptions = {}): Promise<T> {
		const text = await this.text(await this.send(path, options), options.method ?? "GET", path);
		try {
			return (text === "" ? null : JSON.parse(text)) as T;
		} catch {
			return text as T;
		}
	}

	errorOf(method: string, path: string, status: number, text: string): CliError {
		let body: ApiErrorBody = {};
		try {
			body = JSON.parse(text);
		} catch {
			body = { message: text.trim().slice(0, 500) };
		}
		const problems = problemsOf(body);
		// Field problems are printed one per line after the headline (runClient); the headline does not repeat them.
		let message = `${method} /api${path}: ${status} ${problems.length ? "the API refused the input:" : body.message || body.name || "error"}`;
		if (status === 401) message += ` (send a token: --token, --token-file or CLUSTERPLATFORM_TOKEN)`;
		if (status === 403) message += " (the token is read-only, or not allowed to do this)";
		return new CliError(message, exitCodeOfStatus(status), problems);
	}
}
