import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Server, utils, type Connection } from "ssh2";

export interface SshNode {
	host: string;
	port: number;
	/** The server's host key as OpenSSH shows it (ssh-keygen -lf), and as a public key line. */
	fingerprint: string;
	publicKeyLine: string;
	/** Commands the node was asked to run (exec requests), in order. */
	execs: string[];
	stop(): Promise<void>;
}

/**
 * A stand-in installed node for script runs without booting a VM: a real SSH server (ssh2's server
 * side) on a loopback address that accepts one public key for root and runs each exec request with
 * the real /bin/sh in a scratch directory, stdin, stdout, stderr and exit code carried over SSH.
 * test/lan boots real nodes (dropbear in QEMU); this is for tests that only need a shell at the end.
 */
export async function startSshNode(host: string, port: number, authorizedPublicKey: string | "anyone"): Promise<SshNode> {
	const allowed = authorizedPublicKey === "anyone" ? null : utils.parseKey(authorizedPublicKey);
	if (allowed instanceof Error) throw allowed;
	const allowedKey = Array.isArray(allowed) ? allowed[0]! : allowed;
	const { private: hostKey, public: publicKeyLine } = utils.generateKeyPairSync("ed25519");
	const publicBlob = Buffer.from(publicKeyLine.split(" ")[1]!, "base64");
	const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-ssh-node-"));
	const execs: string[] = [];
	const children = new Set<ReturnType<typeof spawn>>();

	const server = new Server({ hostKeys: [hostKey] }, (client: Connection) => {
		client.on("authentication", (auth) => {
			// "anyone": a stranger's server that lets root in without a key (auth method none).
			if (!allowedKey) return auth.accept();
			const ok =
				auth.method === "publickey" &&
				auth.username === "root" &&
				auth.key.algo === allowedKey.type &&
				crypto.timingSafeEqual(auth.key.data, allowedKey.getPublicSSH()) &&
				(!auth.signature || allowedKey.verify(auth.blob!, auth.signature, auth.hashAlgo) === true);
			if (ok) auth.accept();
			else auth.reject(["publickey"]);
		});
		client.on("ready", () => {
			client.on("session", (acceptSession) => {
				const session = acceptSession();
				session.on("exec", (acceptExec, _reject, info) => {
					execs.push(info.command);
					const stream = acceptExec();
					const child = spawn("/bin/sh", ["-c", info.command], { cwd: scratch, env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: scratch } });
					children.add(child);
					stream.pipe(child.stdin);
					child.stdout.pipe(stream, { end: false });
					child.stderr.pipe(stream.stderr, { end: false });
					child.on("close", (code, signal) => {
						children.delete(child);
						if (signal) stream.exit(signal.replace(/^SIG/, ""), false, "");
						else stream.exit(code ?? 0);
						stream.end();
					});
				});
			});
		});
		client.on("error", () => undefined);
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(port, host, () => resolve());
	});
	return {
		host,
		port,
		fingerprint: `SHA256:${crypto.createHash("sha256").update(publicBlob).digest("base64").replace(/=+$/, "")}`,
		publicKeyLine,
		execs,
		async stop() {
			for (const child of children) child.kill("SIGKILL");
			await new Promise<void>((resolve) => server.close(() => resolve()));
			fs.rmSync(scratch, { recursive: true, force: true });
		},
	};
}
