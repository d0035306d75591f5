import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { MAX_CONCURRENT_GENERATIONS } from "@clusterplatform/sshkey";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";

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
const READ_ONLY_TOKEN = generateToken();

describe("sshkey generator", () => {
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({
			services: ["gateway", "sshkey"],
			env: { API_TOKENS: [tokenEntry("test-admin", TEST_ADMIN_TOKEN, false), tokenEntry("auditor", READ_ONLY_TOKEN, true)].join(",") },
		});
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

	it("refuses a read-only token (403) and a caller without a token (401): a new private key is an admin's", async () => {
		const readOnly = await provisioner.api("/sshkey?algorithm=rsa", { headers: { Authorization: `Bearer ${READ_ONLY_TOKEN}` } });
		expect(readOnly.status).toBe(403);
		expect((await readOnly.json()).message).toMatch(/admin token/);
		expect((await fetch(`${provisioner.baseUrl}/api/sshkey?algorithm=rsa`)).status).toBe(401);
	});

	it(`runs at most ${MAX_CONCURRENT_GENERATIONS} RSA-4096 generations at once; the rest get 429 with Retry-After`, async () => {
		const service = provisioner.broker.getLocalService("sshkey") as unknown as { generating: number };
		let most = 0;
		const sampler = setInterval(() => (most = Math.max(most, service.generating)), 2);
		const started = Date.now();
		let answers: Response[];
		try {
			answers = await Promise.all(Array.from({ length: 8 }, () => provisioner.api("/sshkey?algorithm=rsa")));
		} finally {
			clearInterval(sampler);
		}
		const made = answers.filter((r) => r.status === 200);
		const busy = answers.filter((r) => r.status === 429);
		console.log(`8 concurrent RSA-4096 requests: ${made.length} made, ${busy.length} refused, most at once ${most}, ${Date.now() - started} ms`);
		expect(made.length + busy.length).toBe(8);
		expect(made.length).toBeGreaterThanOrEqual(1);
		expect(busy.length).toBeGreaterThanOrEqual(8 - 2 * MAX_CONCURRENT_GENERATIONS);
		expect(most).toBeLessThanOrEqual(MAX_CONCURRENT_GENERATIONS);
		for (const res of busy) {
			expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
			expect((await res.json()).message).toMatch(/busy/);
		}
		for (const res of made) expect((await res.json()).publicKey).toMatch(/^ssh-rsa /);
		expect(service.generating).toBe(0);
		expect((await provisioner.api("/sshkey")).status).toBe(200);
	}, 60_000);
});
