import crypto from "node:crypto";
import { PassThrough, type Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { Errors } from "moleculer";
import { Client, utils } from "ssh2";
import { invalid } from "@clusterplatform/core";

export interface ScriptRun {
	host: string;
	port?: number;
	privateKey: string;
	script: string;
	/** The host key fingerprint an operator accepted (or an enrolled node registered); any other is refused. */
	expectedHostKey: string;
	timeoutMs: number;
	/** Output as it arrives (then it is not also collected into the result); see streamScriptOverSsh. */
	onOutput?(channel: "stdout" | "stderr", chunk: Buffer): void;
	/** The script is running: the connection, the host key and the session are all in place. */
	onStarted?(): void;
}

export interface ScriptResult {
	code: number | null;
	signal: string | null;
	stdout: string;
	stderr: string;
	/** SHA256 fingerprint of the host key the node presented. */
	hostKey: string;
}

/** Output beyond this is cut (and says so) so one chatty script cannot exhaust the worker. */
const OUTPUT_LIMIT = 1024 * 1024;

export class HostKeyChangedError extends Errors.MoleculerClientError {
	constructor(host: string, expected: string, presented: string) {
		super(
			`host key of ${host} changed: recorded ${expected}, presented ${presented}; refusing to connect (if the node was really reinstalled, an operator accepts its new key: PUT /api/localnodes/:id/hostkey)`,
			409,
			"HOST_KEY_CHANGED",
			{ host, expected, presented },
		);
		this.name = "HostKeyChangedError";
	}
}

export class ScriptTimeoutError extends Errors.MoleculerError {
	constructor(host: string, timeoutMs: number) {
		super(`script on ${host} did not finish within ${timeoutMs} ms`, 504, "SCRIPT_TIMEOUT", { host, timeoutMs });
		this.name = "ScriptTimeoutError";
	}
}

export class SshFailedError extends Errors.MoleculerError {
	constructor(host: string, reason: string) {
		super(`SSH to ${host} failed: ${reason}`, 502, "SSH_FAILED", { host });
		this.name = "SshFailedError";
	}
}

/** What fingerprint() makes: OpenSSH's SHA256 form of a host key. */
export const HOST_KEY_FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

export function fingerprint(key: Buffer): string {
	return `SHA256:${crypto.createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/** A private key ssh2 can use (OpenSSH or PEM, unencrypted); a 422 naming the field otherwise. */
export function checkPrivateKey(field: string, text: string): void {
	const parsed = utils.parseKey(text);
	if (parsed instanceof Error) invalid(field, `is not a usable private key: ${parsed.message}`);
	const keys = Array.isArray(parsed) ? parsed : [parsed];
	if (!keys.length || !keys[0]!.isPrivateKey()) invalid(field, "is not a private key");
}

function capped(chunks: Buffer[], size: number): string {
	const text = Buffer.concat(chunks).toString("utf8");
	return size > OUTPUT_LIMIT ? `${text}\n[output cut at ${OUTPUT_LIMIT} bytes]` : text;
}

export class UnauthenticatedLoginError extends Errors.MoleculerError {
	constructor(host: string) {
		super(`SSH to ${host} refused: its server lets root in without authentication, which no node of ours does; nothing was sent`, 502, "SSH_LOGIN_WITHOUT_AUTH", { host });
		this.name = "UnauthenticatedLoginError";
	}
}

/**
 * Authentication as the script run does it: "none" first, and a server that lets root in on it is
 * not a node of ours (it would take any script, and so any key's trust); then the private key.
 */
function authSteps(privateKey: string) {
	const steps: ({ type: "none"; username: string } | { type: "publickey"; username: string; key: string })[] = [
		{ type: "none", username: "root" },
		{ type: "publickey", username: "root", key: privateKey },
	];
	let last: string | null = null;
	return {
		handler: (_methodsLeft: unknown, _partial: unknown, next: (step: unknown) => void) => {
			const step = steps.shift();
			last = step?.type ?? null;
			next(step ?? false);
		},
		acceptedWithoutAuth: () => last === "none",
	};
}

/** The SHA256 fingerprint of the host key a server presents; nothing is authenticated or sent. */
export function presentedHostKey(host: string, port: number, timeoutMs: number): Promise<string> {
	return new Promise((resolve, reject) => {
		const conn = new Client();
		let presented: string | null = null;
		const timer = setTimeout(() => done(), timeoutMs);
		const done = () => {
			clearTimeout(timer);
			conn.end();
			if (presented) resolve(presented);
			else reject(new SshFailedError(host, `no SSH host key was presented on port ${port}`));
		};
		conn.on("error", done);
		conn.on("close", done);
		conn.connect({
			host,
			port,
			username: "root",
			readyTimeout: timeoutMs,
			hostVerifier: (key: Buffer) => {
				presented = fingerprint(key);
				// Stop at the key: this connection is only a look at it.
				return false;
			},
		});
	});
}

/**
 * Run a script as root over SSH (the script goes to `sh -s` on stdin, never into a command
 * line). The key stays in memory. The host key must be the one accepted for the node: there is
 * no trust on first use here.
 */
export function runScriptOverSsh(run: ScriptRun): Promise<ScriptResult> {
	checkPrivateKey("privateKey", run.privateKey);
	if (!run.expectedHostKey) invalid("expectedHostKey", "is required: a script goes only to a node whose host key was accepted");
	const auth = authSteps(run.privateKey);
	return new Promise<ScriptResult>((resolve, reject) => {
		const conn = new Client();
		let presented = "";
		let refused: Error | null = null;
		let settled = false;
		const out: Buffer[] = [];
		const err: Buffer[] = [];
		let outSize = 0;
		let errSize = 0;
		const finish = (error: Error | null, result?: ScriptResult) => {
			if (settled) return;
			settled = true;
			clearTimeout(timer);
			conn.end();
			if (error) reject(error);
			else resolve(result!);
		};
		const timer = setTimeout(() => finish(new ScriptTimeoutError(run.host, run.timeoutMs)), run.timeoutMs);
		conn.on("ready", () => {
			if (auth.acceptedWithoutAuth()) return finish(new UnauthenticatedLoginError(run.host));
			conn.exec("/bin/sh -s", (execErr, stream) => {
				if (execErr) return finish(new SshFailedError(run.host, execErr.message));
				let code: number | null = null;
				let signal: string | null = null;
				run.onStarted?.();
				stream.on("data", (chunk: Buffer) => {
					if (run.onOutput) return run.onOutput("stdout", chunk);
					outSize += chunk.length;
					if (outSize <= OUTPUT_LIMIT) out.push(chunk);
				});
				stream.stderr.on("data", (chunk: Buffer) => {
					if (run.onOutput) return run.onOutput("stderr", chunk);
					errSize += chunk.length;
					if (errSize <= OUTPUT_LIMIT) err.push(chunk);
				});
				stream.on("exit", (exitCode: number | null, exitSignal?: string) => {
					code = exitCode;
					signal = exitSignal ?? null;
				});
				stream.on("close", () => finish(null, { code, signal, stdout: capped(out, outSize), stderr: capped(err, errSize), hostKey: presented }));
				stream.end(run.script);
			});
		});
		conn.on("error", (error) => finish(refused ?? new SshFailedError(run.host, error.message)));
		conn.on("close", () => finish(refused ?? new SshFailedError(run.host, "connection closed before the script finished")));
		conn.connect({
			host: run.host,
			port: run.port ?? 22,
			username: "root",
			authHandler: auth.handler as never,
			readyTimeout: Math.min(run.timeoutMs, 30_000),
			hostVerifier: (key: Buffer) => {
				presented = fingerprint(key);
				if (run.expectedHostKey !== presented) {
					refused = new HostKeyChangedError(run.host, run.expectedHostKey, presented);
					return false;
				}
				return true;
			},
		});
	});
}

/** One line of a streamed script run (application/x-ndjson): output as it comes, then how it ended. */
export type ScriptRecord =
	| { stdout: string }
	| { stderr: string }
	| { code: number | null; signal: string | null; hostKey?: string }
	| { error: string; name: string; status: number };

/**
 * Run a script over SSH and stream its output as NDJSON records. Resolves once the script runs,
 * so a refused connection, key or host key still fails the call itself (with its status);
 * afterwards output flows as it arrives and the last record says how the script ended.
 */
export function streamScriptOverSsh(run: Omit<ScriptRun, "onOutput" | "onStarted">): Promise<Readable> {
	const records = new PassThrough();
	const send = (record: ScriptRecord) => records.write(`${JSON.stringify(record)}\n`);
	const decoders = { stdout: new StringDecoder("utf8"), stderr: new StringDecoder("utf8") };
	return new Promise<Readable>((resolve, reject) => {
		let started = false;
		runScriptOverSsh({
			...run,
			onStarted: () => {
				started = true;
				resolve(records);
			},
			onOutput: (channel, chunk) => {
				const text = decoders[channel].write(chunk);
				// A reader far behind (or gone) loses output beyond the limit, as a buffered run does; never the end record.
				if (text && records.writableLength < OUTPUT_LIMIT) send(channel === "stdout" ? { stdout: text } : { stderr: text });
			},
		}).then(
			(result) => {
				for (const channel of ["stdout", "stderr"] as const) {
					const rest = decoders[channel].end();
					if (rest) send(channel === "stdout" ? { stdout: rest } : { stderr: rest });
				}
				send({ code: result.code, signal: result.signal, hostKey: result.hostKey });
				records.end();
			},
			(err: Error & { code?: number }) => {
				if (!started) return reject(err);
				send({ error: err.message, name: err.name, status: typeof err.code === "number" ? err.code : 500 });
				records.end();
			},
		);
	});
}
