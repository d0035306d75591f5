import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import { defineService, requireBinary, run, type Caller, type RequestMeta } from "@clusterplatform/core";

export const ALGORITHMS = ["ed25519", "ecdsa", "rsa"] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

const KEY_ARGS: Record<Algorithm, string[]> = {
	ed25519: ["-t", "ed25519"],
	ecdsa: ["-t", "ecdsa", "-b", "256"],
	rsa: ["-t", "rsa", "-b", "4096"],
};

/** A fresh key pair in OpenSSH format from ssh-keygen; the scratch directory is removed at once. */
export async function generateKeyPair(algorithm: Algorithm): Promise<{ algorithm: Algorithm; publicKey: string; privateKey: string }> {
	const sshKeygen = requireBinary("ssh-keygen", "openssh-client");
	const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cpp-sshkey-"));
	try {
		const file = path.join(dir, "key");
		await run(sshKeygen, [...KEY_ARGS[algorithm], "-N", "", "-C", "clusterplatform", "-q", "-f", file], { timeout: 60_000 });
		const [privateKey, publicKey] = await Promise.all([fsp.readFile(file, "utf8"), fsp.readFile(`${file}.pub`, "utf8")]);
		return { algorithm, publicKey, privateKey };
	} finally {
		await fsp.rm(dir, { recursive: true, force: true });
	}
}

/**
 * Key generations one process runs at once: an RSA-4096 pair keeps a core busy for about a second,
 * so a few parallel requests could otherwise take every core from the rest of the process.
 */
export const MAX_CONCURRENT_GENERATIONS = 2;
/** What a refused request is told to wait (Retry-After, seconds): about one RSA-4096 generation. */
const RETRY_AFTER_S = 2;

type GenerateMeta = RequestMeta & { caller?: Caller | null };

/** A new private key is for whoever may change things: a read-only token (or no token) gets 403. */
function assertMayGenerate(ctx: Context<unknown, GenerateMeta>): void {
	const { caller } = ctx.meta;
	if (caller === null || caller?.readOnly) {
		throw new Errors.MoleculerClientError("generating key pairs needs an admin token", 403, "FORBIDDEN", { token: caller?.name ?? null });
	}
}

/**
 * /api/sshkey: generates a key pair per request; nothing is stored. Admin tokens only, at most
 * MAX_CONCURRENT_GENERATIONS at once per process; further requests get 429 with Retry-After (a
 * client error: a flood of them is not logged as the server's failures).
 */
export const SshkeyService: ServiceSchema = defineService<object, { generating: number }>({
	name: "sshkey",
	settings: { rest: "/sshkey" },
	actions: {
		generate: {
			rest: "GET /",
			params: { algorithm: { type: "enum", values: [...ALGORITHMS], default: "ed25519" }, $$strict: true },
			async handler(ctx: Context<{ algorithm: Algorithm }, GenerateMeta>) {
				assertMayGenerate(ctx);
				if (this.generating >= MAX_CONCURRENT_GENERATIONS) {
					ctx.meta.$responseHeaders = { "Retry-After": String(RETRY_AFTER_S) };
					throw new Errors.MoleculerClientError(`too many key generations at once: the generator is busy with ${MAX_CONCURRENT_GENERATIONS}, retry in ${RETRY_AFTER_S} s`, 429, "TOO_MANY_GENERATIONS", { retryAfter: RETRY_AFTER_S });
				}
				this.generating++;
				try {
					return await generateKeyPair(ctx.params.algorithm);
				} finally {
					this.generating--;
				}
			},
		},
	},
	created() {
		/** Generations running now (read by tests to see the bound hold). */
		this.generating = 0;
	},
});

export default SshkeyService;
