import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError, loadConfig, Sealer } from "@clusterplatform/core";

/** Finding 15: the key that seals secrets can live outside the data dir it protects. */
describe("the secrets key", () => {
	let dir: string;
	beforeEach(() => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-secrets-"));
	});
	afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

	const write = (name: string, content: string) => {
		const file = path.join(dir, name);
		fs.writeFileSync(file, content, { mode: 0o600 });
		return file;
	};

	it("reads SECRETS_KEY_FILE (a mounted Secret; the trailing newline is not part of the key)", () => {
		const file = write("secrets-key", "a-key-from-a-kubernetes-secret\n");
		expect(loadConfig({ SECRETS_KEY_FILE: file }).secretsKey).toBe("a-key-from-a-kubernetes-secret");
		expect(loadConfig({ SECRETS_KEY: "a-key-from-the-environment" }).secretsKey).toBe("a-key-from-the-environment");
		expect(loadConfig({}).secretsKey).toBeNull();
	});

	it.each([
		["a missing file", () => ({ SECRETS_KEY_FILE: path.join(os.tmpdir(), "no-such-dir-cpp", "key") }), /SECRETS_KEY_FILE: cannot read .*ENOENT/],
		["an empty file", () => ({ SECRETS_KEY_FILE: write("key", "\n") }), /SECRETS_KEY_FILE: .* is empty/],
		["a short key", () => ({ SECRETS_KEY_FILE: write("key", "too-short") }), /SECRETS_KEY_FILE: .* holds 9 characters, at least 16/],
		["both variables", () => ({ SECRETS_KEY: "one-key-of-enough-length", SECRETS_KEY_FILE: write("key", "another-key-of-enough-length") }), /SECRETS_KEY and SECRETS_KEY_FILE are both set/],
	])("refuses %s with a ConfigError naming the variable", (_what, env, message) => {
		const vars = env();
		expect(() => loadConfig(vars)).toThrow(ConfigError);
		expect(() => loadConfig(vars)).toThrow(message);
	});

	it("opens what the data dir's generated key sealed once that key is moved to SECRETS_KEY_FILE", () => {
		const dataDir = path.join(dir, "data");
		const sealed = Sealer.forDataDir(null, dataDir).seal("a private key");
		const generated = fs.readFileSync(path.join(dataDir, "auth", "secrets.key"), "utf8");
		const moved = write("mounted-key", generated);
		fs.rmSync(dataDir, { recursive: true, force: true });

		const config = loadConfig({ SECRETS_KEY_FILE: moved, DATA_DIR: path.join(dir, "empty-data") });
		const sealer = Sealer.forDataDir(config.secretsKey, config.dataDir);
		expect(sealer.open(sealed)).toBe("a private key");
		// With a key from outside, nothing is written into the data dir.
		expect(fs.existsSync(path.join(dir, "empty-data", "auth", "secrets.key"))).toBe(false);
	});

	it("derives the same secret for the same key and purpose, and unrelated ones otherwise", () => {
		const sealer = Sealer.fromSecret("the-deployment-secret-key");
		const secret = sealer.derive("tunnel-password:abc");
		expect(secret).toMatch(/^[0-9a-f]{64}$/);
		expect(Sealer.fromSecret("the-deployment-secret-key").derive("tunnel-password:abc")).toBe(secret);
		expect(sealer.derive("tunnel-password:abd")).not.toBe(secret);
		expect(Sealer.fromSecret("another-deployment-key").derive("tunnel-password:abc")).not.toBe(secret);
	});
});

describe("the tunnel endpoint's limits", () => {
	it("default to a 10 s login timeout, 1024 connections, 64 not logged in; each is configurable", () => {
		expect(loadConfig({}).tunnels).toMatchObject({ authTimeoutMs: 10_000, maxConnections: 1024, maxUnauthenticated: 64 });
		expect(loadConfig({ TUNNEL_AUTH_TIMEOUT: "3", TUNNEL_MAX_CONNECTIONS: "10", TUNNEL_MAX_UNAUTHENTICATED: "5" }).tunnels).toMatchObject({ authTimeoutMs: 3000, maxConnections: 10, maxUnauthenticated: 5 });
		expect(() => loadConfig({ TUNNEL_AUTH_TIMEOUT: "0" })).toThrow(/TUNNEL_AUTH_TIMEOUT must be an integer/);
	});
});
