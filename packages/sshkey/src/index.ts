import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import { requireBinary, run } from "@clusterplatform/core";

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

/** /api/sshkey: generates a key pair per request; nothing is stored. */
export const SshkeyService: ServiceSchema = {
	name: "sshkey",
	settings: { rest: "/sshkey" },
	actions: {
		generate: {
			rest: "GET /",
			params: { algorithm: { type: "enum", values: [...ALGORITHMS], default: "ed25519" }, $$strict: true },
			handler(ctx: Context<{ algorithm: Algorithm }>) {
				return generateKeyPair(ctx.params.algorithm);
			},
		},
	},
};

export default SshkeyService;
