import fs from "node:fs";
import type { IncomingMessage } from "node:http";
import { Errors } from "moleculer-web";
import { TokenSet, tokensFile, type Caller, type Config } from "@clusterplatform/core";

/**
 * The machine path: what booting hosts and installed nodes call. They cannot send headers, so these
 * need no token — and nothing else is open. Everything here only reads, except a node registering
 * itself. (Artifact downloads under /api/artifacts are read-only and open too.)
 */
export const MACHINE_PATH: Readonly<Record<string, readonly string[]>> = {
	"mainscripts.get": ["GET"],
	"subscripts.get": ["GET"],
	"kickstarts.get": ["GET"],
	"prebootscripts.get": ["GET"],
	"postbootscripts.get": ["GET"],
	// Public keys only: the sshkeys service refuses private ones to a caller without a token.
	"sshkeys.get": ["GET"],
	"localnodes.create": ["POST"],
	"gateway.health": ["GET"],
};

const READ_METHODS = ["GET", "HEAD"];

export function isMachinePath(action: string, method: string): boolean {
	return MACHINE_PATH[action]?.includes(method) ?? false;
}

function bearerToken(req: IncomingMessage): string | null {
	const match = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "");
	return match ? match[1]! : null;
}

/**
 * Bearer-token access to the admin API. Tokens are API_TOKENS plus the data dir's tokens file;
 * the file is read again when it changes, so `clusterplatform token create` needs no restart.
 */
export class AccessControl {
	private tokens: TokenSet;
	private fileStamp: number;

	constructor(private readonly config: Config) {
		this.tokens = this.load();
		this.fileStamp = this.stamp();
	}

	private load(): TokenSet {
		return TokenSet.load({ apiTokens: this.config.apiTokens, tokensFile: tokensFile(this.config.dataDir) });
	}

	private stamp(): number {
		try {
			return fs.statSync(tokensFile(this.config.dataDir)).mtimeMs;
		} catch {
			return 0;
		}
	}

	private verify(token: string): Caller | null {
		const caller = this.tokens.verify(token);
		if (caller || this.stamp() === this.fileStamp) return caller;
		this.tokens = this.load();
		this.fileStamp = this.stamp();
		return this.tokens.verify(token);
	}

	get enabled(): boolean {
		return this.config.auth === "on";
	}

	get tokenCount(): number {
		return this.tokens.size;
	}

	/** The caller of a request, or a 401/403 error. Machine-path calls are anonymous. */
	authorize(action: string, req: IncomingMessage): Caller | null {
		const method = req.method ?? "GET";
		const token = bearerToken(req);
		if (!this.enabled) return { name: "anonymous", readOnly: false };
		if (!token) {
			if (isMachinePath(action, method)) return null;
			throw new Errors.UnAuthorizedError(Errors.ERR_NO_TOKEN, { hint: "send Authorization: Bearer <token>" });
		}
		const caller = this.verify(token);
		if (!caller) throw new Errors.UnAuthorizedError(Errors.ERR_INVALID_TOKEN, null);
		if (caller.readOnly && !READ_METHODS.includes(method)) {
			throw new Errors.ForbiddenError("READ_ONLY_TOKEN", { token: caller.name, method });
		}
		return caller;
	}
}
