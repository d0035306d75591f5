import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startTestProvisioner, type TestProvisioner } from "../../../test/support/provisioner";

/** ssh-keygen -y derives the public key from a private key: the pair belongs together. */
function publicKeyOf(privateKey: string): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-keycheck-"));
	try {
		const file = path.join(dir, "key");
		fs.writeFileSync(file, privateKey, { mode: 0o600 });
		const result = spawnSync("ssh-keygen", ["-y", "-f", file], { encoding: "utf8" });
		if (result.status !== 0) throw new Error(result.stderr);
		return result.stdout.trim();
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

const keyBody = (line: string) => line.trim().split(" ").slice(0, 2).join(" ");

describe("sshkey generator", () => {
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ services: ["gateway", "sshkey"] });
	});
	afterAll(() => provisioner?.stop());

	it.each([
		["ed25519", "ssh-ed25519"],
		["ecdsa", "ecdsa-sha2-nistp256"],
		["rsa", "ssh-rsa"],
	])("generates a matching %s pair in OpenSSH format", async (algorithm, prefix) => {
		const res = await provisioner.api(`/sshkey?algorithm=${algorithm}`);
		expect(res.status).toBe(200);
		const { publicKey, privateKey } = await res.json();
		expect(publicKey.startsWith(`${prefix} `)).toBe(true);
		expect(privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n[\s\S]+\n-----END OPENSSH PRIVATE KEY-----\n$/);
		expect(keyBody(publicKeyOf(privateKey))).toBe(keyBody(publicKey));
	});

	it("defaults to ed25519 and gives a new pair every time", async () => {
		const first = await (await provisioner.api("/sshkey")).json();
		const second = await (await provisioner.api("/sshkey")).json();
		expect(first.publicKey.startsWith("ssh-ed25519 ")).toBe(true);
		expect(first.privateKey).not.toBe(second.privateKey);
	});

	it.each(["dsa", "$(reboot)", "ed25519;ls"])("refuses algorithm %j with a 422", async (algorithm) => {
		const res = await provisioner.api(`/sshkey?algorithm=${encodeURIComponent(algorithm)}`);
		expect(res.status).toBe(422);
		const error = await res.json();
		expect(error.data[0].field).toBe("algorithm");
		expect(error.message).toMatch(/algorithm: must be one of ed25519, ecdsa, rsa/);
	});
});
