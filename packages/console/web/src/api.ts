/**
 * The console's only way to the provisioner: /api on the same origin, with the operator's bearer
 * token from sessionStorage (gone when the tab closes). A 401 forgets the token and sends the
 * operator back to the token field.
 */

const TOKEN_KEY = "clusterplatform.token";

export function storedToken(): string | null {
	return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string | null): void {
	if (token) sessionStorage.setItem(TOKEN_KEY, token);
	else sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorized: (reason: string) => void = () => undefined;

/** Called with the reason whenever the API answers 401. */
export function onUnauthorized(listener: (reason: string) => void): void {
	unauthorized = listener;
}

export interface FieldProblem {
	field: string;
	message: string;
}

/** An API answer other than 2xx: its status, message and the fields it names (422s). */
export class ApiError extends Error {
	constructor(
		readonly status: number,
		message: string,
		readonly fields: FieldProblem[] = [],
	) {
		super(message);
	}
}

function problemOf(status: number, body: unknown): ApiError {
	const payload = (typeof body === "object" && body !== null ? body : {}) as { message?: string; data?: unknown };
	const fields = Array.isArray(payload.data) ? (payload.data as FieldProblem[]).filter((p) => typeof p?.field === "string") : [];
	const message = payload.message ?? (typeof body === "string" && body ? body : `HTTP ${status}`);
	return new ApiError(status, message, fields);
}

export interface CallOptions {
	method?: "GET" | "POST" | "PUT" | "DELETE";
	json?: unknown;
	/** Send no token (used to find out whether the API wants one). */
	anonymous?: boolean;
}

export async function api<T = any>(path: string, options: CallOptions = {}): Promise<T> {
	const headers: Record<string, string> = { Accept: "application/json" };
	const token = storedToken();
	if (token && !options.anonymous) headers.Authorization = `Bearer ${token}`;
	if (options.json !== undefined) headers["Content-Type"] = "application/json";
	const response = await fetch(`/api${path}`, {
		method: options.method ?? "GET",
		headers,
		body: options.json === undefined ? undefined : JSON.stringify(options.json),
	});
	const text = await response.text();
	let body: unknown = text;
	try {
		body = text ? JSON.parse(text) : null;
	} catch {
		// plain text answer
	}
	if (response.status === 401 && !options.anonymous) {
		storeToken(null);
		unauthorized(token ? "The API refused that token (401). Paste a valid one." : "The API needs a token.");
	}
	if (!response.ok) throw problemOf(response.status, body);
	return body as T;
}

/** Every row of an entity, newest first (the API pages at most 1000; the console shows 200). */
export async function listRows<T>(entity: string): Promise<T[]> {
	const page = await api<{ rows: T[] }>(`/${entity}?pageSize=200&sort=-id`);
	return page.rows;
}

/** The provisioner's public URL (what booting hosts use), from the OpenAPI document's servers. */
export async function publicUrl(): Promise<string> {
	try {
		const document = await api<{ servers?: { url: string }[] }>("/openapi.json");
		return (document.servers?.[0]?.url ?? location.origin).replace(/\/+$/, "");
	} catch {
		return location.origin;
	}
}

/** A builder row: ipxes, grubs, syslinuxs, isos. */
export interface BuildRow {
	id: number;
	status: "queued" | "working" | "done" | "failed";
	progress: number;
	error: string | null;
	url: string | null;
	createdAt: string;
	updatedAt: string;
	[input: string]: unknown;
}

export const FINISHED = ["done", "failed"];

const POLL_MS = 1000;
const WATCH_LIMIT_MS = 60 * 60 * 1000;

/**
 * Poll one builder row until it is done or failed, reporting every state; bounded by an hour and
 * by `signal` (the view went away).
 */
export async function watchBuild(entity: string, id: number, report: (row: BuildRow) => void, signal: AbortSignal): Promise<BuildRow> {
	const deadline = Date.now() + WATCH_LIMIT_MS;
	while (Date.now() < deadline) {
		if (signal.aborted) throw new Error("stopped watching");
		const row = await api<BuildRow>(`/${entity}/${id}`);
		report(row);
		if (FINISHED.includes(row.status)) return row;
		await new Promise((resolve) => setTimeout(resolve, POLL_MS));
	}
	throw new Error(`${entity} ${id} did not finish within an hour`);
}
