import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { stopChild } from "../../support/servers";
import { freePort, waitForPort } from "../../support/ports";

const ROOT = path.resolve(__dirname, "..", "..", "..");

export interface ContainerNats {
	url: string;
	port: number;
	/** The CA's PEM, as a container gets it (`-e "NATS_TLS_CA=$(cat nats-ca.crt)"`). */
	caPem: string;
	/** NATS_USER and NATS_PASSWORD of the cluster (site null) or of a site, made by `clusterplatform bus user`. */
	credentials(site: string | null): { NATS_USER: string; NATS_PASSWORD: string };
	/** Everything a process connects with: TRANSPORTER, NATS_TLS_CA (the PEM), the credential. */
	env(site: string | null): Record<string, string>;
	stop(): Promise<void>;
}

/**
 * nats-server as k8s/base/nats.yaml runs it (TLS, every user authenticated and confined, the users
 * made with the built CLI's `bus user` as an operator makes them), listening on `address`: the
 * loopback for containers on the host's network, the LAN's host address for a site's distributor.
 * The server certificate names that address.
 */
export async function startContainerNats(address: string, sites: string[]): Promise<ContainerNats> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-nats-containers-"));
	const file = (name: string) => path.join(dir, name);
	const openssl = (...args: string[]) => {
		const result = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
		if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr}`);
	};
	const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
	openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cpp-containers-test-ca");
	openssl("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${address}`);
	fs.writeFileSync(file("san.ext"), `subjectAltName=IP:${address},DNS:localhost\n`);
	openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext");
	const credentials = new Map<string | null, { NATS_USER: string; NATS_PASSWORD: string }>();
	const cli = path.join(ROOT, "packages", "cli", "dist", "main.js");
	for (const site of [null, ...sites]) {
		const made = spawnSync(process.execPath, [cli, "bus", "user", ...(site ? [`--site=${site}`] : []), `--file=${file("users.conf")}`], { encoding: "utf8" });
		if (made.status !== 0) throw new Error(`clusterplatform bus user failed: ${made.stderr}`);
		const pairs = Object.fromEntries(made.stdout.split("\n").filter((l) => /^NATS_(USER|PASSWORD)=/.test(l)).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
		credentials.set(site, pairs as { NATS_USER: string; NATS_PASSWORD: string });
	}
	const port = await freePort();
	fs.writeFileSync(
		file("nats.conf"),
		`listen: "${address}:${port}"\ntls {\n  cert_file: "${file("server.pem")}"\n  key_file: "${file("server.key")}"\n  timeout: 5\n}\nauthorization {\n  timeout: 5\n  include "users.conf"\n}\n`,
	);
	const binary = ["/usr/bin/nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"].find((p) => fs.existsSync(p));
	if (!binary) throw new Error("nats-server is not installed");
	const child = spawn(binary, ["-c", file("nats.conf")], { stdio: "ignore" });
	await waitForPort(port, 15_000, address);
	const url = `tls://${address}:${port}`;
	const caPem = fs.readFileSync(file("ca.pem"), "utf8");
	return {
		url,
		port,
		caPem,
		credentials: (site) => credentials.get(site)!,
		env: (site) => ({ TRANSPORTER: url, NATS_TLS_CA: caPem, ...credentials.get(site)! }),
		async stop() {
			await stopChild(child);
			fs.rmSync(dir, { recursive: true, force: true });
		},
	};
}
