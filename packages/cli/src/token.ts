import { addTokenToFile, ConfigError, generateToken, tokenEntry, TokenSet, tokensFile, type Config } from "@clusterplatform/core";

/**
 * Embedded defaults keep their API closed from the first start: when auth is on and no token is
 * configured anywhere, an admin token is made, its hash kept in the data dir, and the token itself
 * handed back once to be printed. Null when tokens exist or auth is off.
 */
export function ensureFirstToken(config: Config): string | null {
	if (config.auth === "off") return null;
	const file = tokensFile(config.dataDir);
	if (TokenSet.load({ apiTokens: config.apiTokens, tokensFile: file }).size > 0) return null;
	const token = generateToken();
	addTokenToFile(file, "admin", token, false);
	return token;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * `clusterplatform token create [--name=N] [--read-only]`: a new token for this data dir, printed
 * once. `clusterplatform token entry [--name=N] [--read-only] <token>`: the API_TOKENS entry (hash)
 * for a token, for a Kubernetes Secret.
 */
export function tokenCommand(config: Config, args: string[]): string {
	const [verb, ...rest] = args;
	const flags = rest.filter((a) => a.startsWith("--"));
	const words = rest.filter((a) => !a.startsWith("--"));
	const name = flags.find((f) => f.startsWith("--name="))?.slice("--name=".length) ?? (verb === "create" ? "operator" : "admin");
	const readOnly = flags.includes("--read-only");
	if (!NAME.test(name)) throw new ConfigError("token: --name must be letters, digits, '.', '_' or '-' (at most 64)");
	switch (verb) {
		case "create": {
			const token = generateToken();
			addTokenToFile(tokensFile(config.dataDir), name, token, readOnly);
			return token;
		}
		case "entry":
			if (words.length !== 1) throw new ConfigError("token entry: give the token as the one argument");
			return tokenEntry(name, words[0]!, readOnly);
		default:
			throw new ConfigError("usage: clusterplatform token create|entry [--name=N] [--read-only] [token]");
	}
}
