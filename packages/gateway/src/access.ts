import fs from "node:fs";
import type { IncomingMessage } from "node:http";
import { Errors } from "moleculer-web";
import { TokenSet, tokensFile, type Caller, type Config } from "@clusterplatform/core";
import { machineRequest } from "./machine-path";

const READ_METHODS = ["GET", "HEAD"];

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

	/**
	 * The caller of a request, or a 401/403 error. Called twice per request: by the request gate
	 * before anything of the body is read (`action` unknown yet), and by moleculer-web's authorize
	 * with the action the route resolved to. Without a token only the machine path answers (its row
	 * in machine-path.ts must name that very action); a token that is present but unknown gets 401
	 * everywhere, the machine path included.
	 */
	authorize(req: IncomingMessage & { originalUrl?: string }, action?: string): Caller | null {
		const method = req.method ?? "GET";
		if (!this.enabled) return { name: "anonymous", readOnly: false };
		const token = bearerToken(req);
		if (!token) {
			if (req.headers.authorization) throw new Errors.UnAuthorizedError(Errors.ERR_INVALID_TOKEN, { hint: "send Authorization: Bearer <token>" });
			const machine = machineRequest(req);
			if (machine && (action === undefined || machine.route.action === action)) return null;
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
