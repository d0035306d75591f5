import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ConfigError } from "./errors";

/** Who made a request: a named token, possibly limited to reading. */
export interface Caller {
	name: string;
	readOnly: boolean;
}

interface StoredToken extends Caller {
	/** sha256 of the token, hex: tokens are never kept in the clear. */
	hash: Buffer;
}

const TOKEN_PREFIX = "cpp_";
const ENTRY = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63}):(?:sha256:)?([0-9a-f]{64})(?::(read|admin))?$/;

export function hashToken(token: string): string {
	return createHash("sha256").update(token, "utf8").digest("hex");
}

/** A new random bearer token (256 bits). */
export function generateToken(): string {
	return `${TOKEN_PREFIX}${randomBytes(32).toString("base64url")}`;
}

/** `name:<sha256 hex>[:read]`, the form API_TOKENS and the tokens file hold. */
export function tokenEntry(name: string, token: string, readOnly: boolean): string {
	return `${name}:${hashToken(token)}${readOnly ? ":read" : ""}`;
}

function parseEntries(text: string, source: string): StoredToken[] {
	return text
		.split(/[\n,]/)
		.map((line) => line.trim())
		.filter((line) => line !== "" && !line.startsWith("#"))
		.map((line) => {
			const match = ENTRY.exec(line);
			if (!match) throw new ConfigError(`${source}: "${line.slice(0, 40)}" is not name:<sha256 hex of the token>[:read]`);
			return { name: match[1]!, hash: Buffer.from(match[2]!, "hex"), readOnly: match[3] === "read" };
		});
}

/**
 * The tokens the gateway accepts: API_TOKENS from the environment (a Kubernetes Secret) plus the
 * data dir's tokens file (embedded defaults). Only hashes are held; a check compares in constant time.
 */
export class TokenSet {
	private constructor(private readonly tokens: StoredToken[]) {}

	static load(options: { apiTokens: string | null; tokensFile: string }): TokenSet {
		const fromEnv = options.apiTokens ? parseEntries(options.apiTokens, "API_TOKENS") : [];
		const fromFile = fs.existsSync(options.tokensFile) ? parseEntries(fs.readFileSync(options.tokensFile, "utf8"), options.tokensFile) : [];
		return new TokenSet([...fromEnv, ...fromFile]);
	}

	get size(): number {
		return this.tokens.length;
	}

	verify(token: string): Caller | null {
		const hash = Buffer.from(hashToken(token), "hex");
		let found: Caller | null = null;
		// Look at every entry, so timing does not tell which one matched.
		for (const entry of this.tokens) if (timingSafeEqual(entry.hash, hash) && !found) found = { name: entry.name, readOnly: entry.readOnly };
		return found;
	}
}

/** Where embedded defaults keep their token hashes. */
export function tokensFile(dataDir: string): string {
	return path.join(dataDir, "auth", "tokens");
}

/** Append a token's hash to the tokens file (0600), creating it; returns nothing secret. */
export function addTokenToFile(file: string, name: string, token: string, readOnly: boolean): void {
	fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
	fs.appendFileSync(file, `${tokenEntry(name, token, readOnly)}\n`, { mode: 0o600 });
}
