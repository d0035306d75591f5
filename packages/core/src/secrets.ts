import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ConfigError } from "./errors";

const SEALED_PREFIX = "sealed:v1:";

/**
 * Seals secrets at rest (private SSH keys) with AES-256-GCM, and derives secrets that need not be
 * stored at all (tunnel passwords). The key comes from SECRETS_KEY or SECRETS_KEY_FILE (a Kubernetes
 * Secret; any string, hashed to 256 bits) or, on embedded defaults, from a key file generated in the
 * data dir on first use — beside the database it protects, so a deployment keeps it elsewhere.
 */
export class Sealer {
	/** A key of its own for derivation (HKDF), so no value is ever both a ciphertext key and a MAC key. */
	private readonly derivationKey: Buffer;

	private constructor(private readonly key: Buffer) {
		this.derivationKey = Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), "clusterplatform derived secrets", 32));
	}

	static fromSecret(secret: string): Sealer {
		if (secret.length < 16) throw new ConfigError("SECRETS_KEY must be at least 16 characters");
		return new Sealer(createHash("sha256").update(secret, "utf8").digest());
	}

	/** SECRETS_KEY, or the data dir's key file (made once, 0600). */
	static forDataDir(secretsKey: string | null, dataDir: string): Sealer {
		if (secretsKey) return Sealer.fromSecret(secretsKey);
		const file = path.join(dataDir, "auth", "secrets.key");
		if (!fs.existsSync(file)) {
			fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
			try {
				fs.writeFileSync(file, randomBytes(32).toString("base64"), { mode: 0o600, flag: "wx" });
			} catch (err) {
				// Another service of this process made it first: use theirs.
				if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
			}
		}
		return Sealer.fromSecret(fs.readFileSync(file, "utf8").trim());
	}

	/**
	 * A secret for `purpose` (e.g. "tunnel-password:<nonce>"), 64 hex digits (HMAC-SHA256): whoever holds the
	 * key makes it again, so the database needs to keep only a hash of it.
	 */
	derive(purpose: string): string {
		return createHmac("sha256", this.derivationKey).update(purpose, "utf8").digest("hex");
	}

	static isSealed(value: string): boolean {
		return value.startsWith(SEALED_PREFIX);
	}

	seal(plain: string): string {
		const iv = randomBytes(12);
		const cipher = createCipheriv("aes-256-gcm", this.key, iv);
		const body = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
		return SEALED_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64");
	}

	open(sealed: string): string {
		if (!Sealer.isSealed(sealed)) throw new Error("value is not sealed");
		const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), "base64");
		const decipher = createDecipheriv("aes-256-gcm", this.key, raw.subarray(0, 12));
		decipher.setAuthTag(raw.subarray(12, 28));
		return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString("utf8");
	}
}
