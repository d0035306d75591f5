import crypto from "node:crypto";
import https from "node:https";
import type { IncomingHttpHeaders } from "node:http";
import net from "node:net";
import tls from "node:tls";
import { displayFingerprint } from "./fields";
import { BmcError, type BmcFields } from "./types";

const MAX_REDIRECTS = 3;
const MAX_BODY_BYTES = 1024 * 1024;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NOT_REACHED = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN", "ECONNRESET", "EPIPE"]);

export interface RedfishResponse {
	status: number;
	headers: IncomingHttpHeaders;
	/** The parsed JSON body, or undefined when there is none. */
	body: Record<string, unknown> | undefined;
	/** Where the answer finally came from, after redirects (a path on this BMC). */
	path: string;
}

export interface RedfishRequest {
	method: "GET" | "POST" | "PATCH" | "DELETE";
	path: string;
	body?: unknown;
	headers?: Record<string, string>;
}

/**
 * HTTPS to one BMC, and only to it: every URL (redirect targets, @odata.id links the BMC hands
 * out) must stay on the BMC's own address and port. Each request opens its own TLS connection and
 * checks the certificate before a byte is sent — the session login carries the password.
 */
export class RedfishHttp {
	private readonly origin: string;
	private readonly limitSeconds: number;

	constructor(
		private readonly fields: BmcFields,
		private readonly label: string,
		/** Epoch ms by which the whole call must be done. */
		private readonly deadline: number,
	) {
		const host = net.isIPv6(fields.address) ? `[${fields.address}]` : fields.address;
		this.origin = new URL(`https://${host}:${fields.port}`).origin;
		this.limitSeconds = Math.max(0, Math.round((deadline - Date.now()) / 100) / 10);
	}

	/** A path or URL from the BMC, refused unless it names this BMC. */
	pathOnBmc(reference: string, base = "/"): string {
		let url: URL;
		try {
			url = new URL(reference, new URL(base, this.origin));
		} catch {
			throw new BmcError(this.label, "unexpected", `not a URL: ${reference.slice(0, 100).replace(/[\u0000-\u001f\u007f]/g, " ")}`);
		}
		if (url.origin !== this.origin) throw new BmcError(this.label, "unexpected", `pointed to another host (${url.origin}); refused`);
		return url.pathname + url.search;
	}

	async request(request: RedfishRequest, deadline = this.deadline): Promise<RedfishResponse> {
		let { method, body } = request;
		let path = this.pathOnBmc(request.path);
		for (let redirects = 0; ; redirects++) {
			const response = await this.once(method, path, body, request.headers ?? {}, deadline);
			const location = response.headers.location;
			if (!REDIRECT_STATUSES.has(response.status) || !location) return { ...response, path };
			if (redirects === MAX_REDIRECTS) throw new BmcError(this.label, "unexpected", `more than ${MAX_REDIRECTS} redirects from ${request.path}`);
			path = this.pathOnBmc(location, path);
			if (response.status === 303) {
				method = "GET";
				body = undefined;
			}
		}
	}

	private async once(method: string, path: string, body: unknown, headers: Record<string, string>, deadline: number): Promise<Omit<RedfishResponse, "path">> {
		const socket = await this.connect(deadline);
		const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => req.destroy(this.timeout()), Math.max(0, deadline - Date.now()));
			const req = https.request(
				{
					method,
					host: this.fields.address,
					port: this.fields.port,
					path,
					createConnection: () => socket,
					headers: {
						accept: "application/json",
						"odata-version": "4.0",
						...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}),
						...headers,
					},
				},
				(res) => {
					const chunks: Buffer[] = [];
					let size = 0;
					res.on("data", (chunk: Buffer) => {
						size += chunk.length;
						if (size > MAX_BODY_BYTES) req.destroy(new BmcError(this.label, "unexpected", `answer larger than ${MAX_BODY_BYTES} bytes`));
						else chunks.push(chunk);
					});
					res.on("end", () => {
						clearTimeout(timer);
						socket.destroy();
						try {
							resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parseBody(Buffer.concat(chunks)) });
						} catch {
							reject(new BmcError(this.label, "unexpected", `${method} ${path}: answer is not JSON (HTTP ${res.statusCode})`));
						}
					});
					res.on("error", (err) => reject(this.networkFailure(err)));
				},
			);
			req.on("error", (err) => {
				clearTimeout(timer);
				socket.destroy();
				reject(this.networkFailure(err));
			});
			req.end(payload);
		});
	}

	/** A TLS connection whose certificate was checked; nothing is written on it before. */
	private connect(deadline: number): Promise<tls.TLSSocket> {
		return new Promise((resolve, reject) => {
			const remaining = deadline - Date.now();
			if (remaining <= 0) return reject(this.timeout());
			const { address, port } = this.fields;
			const socket = tls.connect({ host: address, port, servername: net.isIP(address) ? undefined : address, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
			const timer = setTimeout(() => socket.destroy(this.timeout()), remaining);
			socket.once("secureConnect", () => {
				clearTimeout(timer);
				const problem = this.certificateProblem(socket);
				if (!problem) return resolve(socket);
				socket.destroy();
				reject(problem);
			});
			socket.once("error", (err) => {
				clearTimeout(timer);
				reject(this.networkFailure(err));
			});
		});
	}

	/**
	 * A pinned fingerprint is the whole trust decision (BMCs ship self-signed certificates, often for
	 * a name nobody resolves). Without a pin, only a certificate a public CA signed for this address
	 * passes; anything else is refused, saying the fingerprint seen so an operator can compare it
	 * with the BMC's console and pin it.
	 */
	private certificateProblem(socket: tls.TLSSocket): BmcError | null {
		const certificate = socket.getPeerCertificate();
		if (!certificate?.raw) return new BmcError(this.label, "certificate", "no certificate presented");
		const seen = crypto.createHash("sha256").update(certificate.raw).digest("hex");
		const pinned = this.fields.certificateSha256;
		if (pinned) {
			if (seen === pinned) return null;
			return new BmcError(this.label, "certificate", `its certificate's SHA-256 is ${displayFingerprint(seen)}, not the pinned ${displayFingerprint(pinned)}`, {
				seenCertificateSha256: displayFingerprint(seen),
			});
		}
		if (socket.authorized && tls.checkServerIdentity(this.fields.address, certificate) === undefined) return null;
		return new BmcError(
			this.label,
			"certificate",
			`no certificate pinned and this one is not signed by a trusted CA for ${this.fields.address}: its SHA-256 is ${displayFingerprint(seen)}; check it on the BMC and pin it (certificateSha256)`,
			{ seenCertificateSha256: displayFingerprint(seen) },
		);
	}

	private networkFailure(err: Error & { code?: string }): BmcError {
		if (err instanceof BmcError) return err;
		if (err.code === "ETIMEDOUT") return this.timeout();
		if (err.code && NOT_REACHED.has(err.code)) return new BmcError(this.label, "unreachable", err.code);
		return new BmcError(this.label, "unexpected", err.code ?? err.message);
	}

	private timeout(): BmcError {
		return new BmcError(this.label, "timeout", `no answer within the call's ${this.limitSeconds} s`);
	}
}

function parseBody(raw: Buffer): Record<string, unknown> | undefined {
	if (raw.length === 0) return undefined;
	const value: unknown = JSON.parse(raw.toString("utf8"));
	return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}
