import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { freePort } from "@clusterplatform/test-kit/ports";
import { startSshNode, type SshNode } from "@clusterplatform/test-kit/ssh-node";

const SITE = `registration-${process.pid}`;
/** Stand-in nodes are SSH servers on loopback addresses of their own (hence ALLOW_LOOPBACK_NODES). */
const NODE_IP = "127.0.0.31";
const OTHER_IP = "127.0.0.32";

/**
 * Where an operator's script goes, and who decides it: the review's attack (an anonymous
 * re-registration moving a node's SSH port to a stranger's server that let root in without a key,
 * which then got the script and had its host key pinned) and what stops it — registration never
 * moves a node, host keys are accepted by an operator or come with an enrolled registration, and a
 * server that lets root in unauthenticated gets nothing.
 */
describe("localnodes: registration cannot redirect an operator's script", () => {
	let provisioner: TestProvisioner;
	let node: SshNode;
	let stranger: SshNode;
	let enrolledNode: SshNode;
	let keys: { publicKey: string; privateKey: string };
	const register = (query: string, init: RequestInit = {}) => fetch(`${provisioner.baseUrl}/api/localnodes?${query}`, { method: "POST", ...init });
	const script = (id: number, json: Record<string, unknown> = {}) => provisioner.api(`/localnodes/${id}/script`, { method: "PUT", json: { script: "echo ran on $(pwd)", timeout: 20, ...json } });
	const row = async (id: number) => (await provisioner.api(`/localnodes/${id}`)).json();

	beforeAll(async () => {
		provisioner = await startTestProvisioner({
			services: ["gateway", "localnodes", "enrolments", "scriptruns", "distributors", "distributor-worker", "sshkeys", "sshkey"],
			env: { CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, ALLOW_LOOPBACK_NODES: "true" },
		});
		keys = await (await provisioner.api("/sshkey")).json();
		node = await startSshNode(NODE_IP, await freePort(), keys.publicKey);
		stranger = await startSshNode(NODE_IP, await freePort(), "anyone");
		enrolledNode = await startSshNode(OTHER_IP, await freePort(), keys.publicKey);
		expect((await provisioner.api("/sshkeys", { method: "POST", json: { text: keys.privateKey, artifactId: SITE, private: true } })).status).toBe(201);
	}, 60_000);

	afterAll(async () => {
		await node?.stop();
		await stranger?.stop();
		await enrolledNode?.stop();
		await provisioner?.stop();
	});

	it("refuses an anonymous re-registration that would move a node to another port, and tells the node only what it needs", async () => {
		const first = await register(`ip=${NODE_IP}&artifactId=${SITE}&pingable=true&sshPort=${node.port}`);
		expect(first.status).toBe(201);
		const reply = await first.json();
		expect(Object.keys(reply).sort()).toEqual(["artifactId", "hostKeyAccepted", "id", "ip", "pingable", "sshPort"]);
		expect(reply).toMatchObject({ ip: NODE_IP, sshPort: node.port, hostKeyAccepted: false });
		const moved = await register(`ip=${NODE_IP}&artifactId=${SITE}&pingable=true&sshPort=${stranger.port}`);
		expect(moved.status).toBe(409);
		const refusal = await moved.json();
		expect(refusal.data).toMatchObject({ field: "sshPort" });
		expect(refusal.message).toMatch(/an operator does/);
		expect(await row(reply.id)).toMatchObject({ sshPort: node.port, hostKey: null });
		// The same node registering again as it did is fine (a reboot reruns its post-boot script).
		expect((await register(`ip=${NODE_IP}&artifactId=${SITE}&pingable=false&sshPort=${node.port}`)).status).toBe(200);
	});

	it("runs no script on a node whose host key nobody accepted: it shows the key the node presents instead", async () => {
		const { id } = await (await register(`ip=${NODE_IP}&artifactId=${SITE}`)).json();
		const refused = await script(id);
		expect(refused.status).toBe(409);
		const body = await refused.json();
		expect(body.data).toMatchObject({ field: "hostKey", presented: node.fingerprint });
		expect(body.message).toContain(`PUT /api/localnodes/${id}/hostkey`);
		expect(node.execs).toEqual([]);
		expect(await (await provisioner.api(`/localnodes/${id}/hostkey`)).json()).toEqual({ id, recorded: null, presented: node.fingerprint });
		const runs = (await (await provisioner.api("/scriptruns?pageSize=100")).json()).rows.filter((r: { localnodeId: number }) => r.localnodeId === id);
		expect(runs).toEqual([]);
		// Accepted (as a public key line, the way a console shows it), the script runs and the key stays pinned.
		const accepted = await provisioner.api(`/localnodes/${id}/hostkey`, { method: "PUT", json: { hostKey: node.publicKeyLine } });
		expect(accepted.status).toBe(200);
		expect((await accepted.json()).hostKey).toBe(node.fingerprint);
		const ran = await script(id);
		expect(ran.status).toBe(200);
		expect(await ran.json()).toMatchObject({ code: 0, stdout: expect.stringMatching(/^ran on /) });
		expect(node.execs).toEqual(["/bin/sh -s"]);
		const bad = await provisioner.api(`/localnodes/${id}/hostkey`, { method: "PUT", json: { hostKey: "my key" } });
		expect(bad.status).toBe(422);
		expect((await bad.json()).data[0].field).toBe("hostKey");
	});

	it("sends the script to the node, never to the stranger, when an operator is fooled into moving the node there", async () => {
		const { id } = await (await provisioner.api("/localnodes", { method: "POST", json: { ip: NODE_IP, artifactId: SITE, sshPort: node.port } })).json();
		const runsBefore = (await (await provisioner.api(`/scriptruns?search=${NODE_IP}&searchFields=ip&pageSize=100`)).json()).total;
		expect((await provisioner.api(`/localnodes/${id}/hostkey`, { method: "PUT", json: { hostKey: node.fingerprint } })).status).toBe(200);
		// Only an operator moves a node.
		const moved = await provisioner.api(`/localnodes/${id}`, { method: "PUT", json: { sshPort: stranger.port } });
		expect(moved.status).toBe(200);
		const changed = await script(id);
		expect(changed.status).toBe(409);
		expect((await changed.json()).type).toBe("HOST_KEY_CHANGED");
		// Even with the stranger's own key accepted, a server that lets root in without a key gets nothing.
		expect((await provisioner.api(`/localnodes/${id}/hostkey`, { method: "PUT", json: { hostKey: stranger.fingerprint } })).status).toBe(200);
		const unauthenticated = await script(id);
		expect(unauthenticated.status).toBe(502);
		expect((await unauthenticated.json()).type).toBe("SSH_LOGIN_WITHOUT_AUTH");
		expect(stranger.execs).toEqual([]);
		const audit = (await (await provisioner.api(`/scriptruns?search=${NODE_IP}&searchFields=ip&sort=id&pageSize=100`)).json()).rows.slice(runsBefore);
		expect(audit.map((r: { status: string; error: string }) => [r.status, r.error])).toEqual([
			["failed", expect.stringMatching(/host key of .* changed/)],
			["failed", expect.stringMatching(/without authentication/)],
		]);
	});

	// Last of these: from here on the site takes only enrolled registrations.
	it("takes only enrolled registrations at a site that requires enrolment; an enrolled node's host key is pinned from its registration", async () => {
		// Known before the site required enrolment, without an accepted key: enrolment will not pin one on it.
		const known = await (await register(`ip=127.0.0.33&artifactId=${SITE}`)).json();
		const created = await provisioner.api("/enrolments", { method: "POST", json: { artifactId: SITE } });
		expect(created.status).toBe(201);
		const { id: enrolmentId, token } = await created.json();
		expect(token).toMatch(/^cpe_/);
		const listed = await (await provisioner.api("/enrolments")).json();
		expect(JSON.stringify(listed)).not.toContain(token);
		expect(listed.rows[0]).not.toHaveProperty("tokenSha256");
		expect(await (await provisioner.api(`/enrolments/${enrolmentId}`)).json()).not.toHaveProperty("token");

		const query = `ip=${OTHER_IP}&artifactId=${SITE}&sshPort=${enrolledNode.port}`;
		const anonymous = await register(query);
		expect(anonymous.status).toBe(401);
		expect((await anonymous.json()).data).toEqual([{ field: "enrolmentToken", message: "is required by this site" }]);
		const wrong = await register(`${query}&enrolmentToken=cpe_wrong`);
		expect(wrong.status).toBe(401);
		expect((await wrong.json()).data[0].message).toMatch(/not this site's enrolment token/);
		// As a post-boot script sends it: the token and the node's host key in a form body, not the URL.
		const form = new URLSearchParams({ enrolmentToken: token, hostKey: enrolledNode.publicKeyLine });
		const enrolled = await register(query, { body: form });
		expect(enrolled.status).toBe(201);
		const { id, hostKeyAccepted } = await enrolled.json();
		expect(hostKeyAccepted).toBe(true);
		expect((await row(id)).hostKey).toBe(enrolledNode.fingerprint);
		const ran = await script(id, { script: "echo enrolled" });
		expect(await ran.json()).toMatchObject({ code: 0, stdout: "enrolled\n" });
		// An enrolled registration cannot swap a pinned key either.
		const swapped = await register(query, { body: new URLSearchParams({ enrolmentToken: token, hostKey: stranger.fingerprint }) });
		expect(swapped.status).toBe(409);
		expect((await row(id)).hostKey).toBe(enrolledNode.fingerprint);
		const pinOnKnown = await register(`ip=127.0.0.33&artifactId=${SITE}`, { body: new URLSearchParams({ enrolmentToken: token, hostKey: stranger.publicKeyLine }) });
		expect(pinOnKnown.status).toBe(409);
		expect((await row(known.id)).hostKey).toBeNull();
	});
});

describe("localnodes: addresses no node has, and a bound on anonymous registrations", () => {
	let provisioner: TestProvisioner;
	const register = (query: string, init: RequestInit = {}) => fetch(`${provisioner.baseUrl}/api/localnodes?${query}`, { method: "POST", ...init });

	beforeAll(async () => {
		provisioner = await startTestProvisioner({ services: ["gateway", "localnodes", "enrolments"], env: { REGISTRATION_BURST: "5", REGISTRATION_RATE: "1" } });
	});
	afterAll(() => provisioner?.stop());

	it("refuses loopback, unspecified, multicast and broadcast node addresses, naming ip", async () => {
		for (const ip of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "224.0.0.251", "255.255.255.255", "ff02::1"]) {
			const res = await register(`ip=${encodeURIComponent(ip)}&artifactId=site`);
			expect([ip, res.status]).toEqual([ip, 422]);
			expect((await res.json()).data[0].field).toBe("ip");
		}
		const viaOperator = await provisioner.api("/localnodes", { method: "POST", json: { ip: "127.0.0.1", artifactId: "site" } });
		expect(viaOperator.status).toBe(422);
	});

	it("lets one address register a burst of new nodes, then answers 429 with Retry-After; operators are not limited", async () => {
		const statuses: number[] = [];
		for (let i = 1; i <= 8; i++) statuses.push((await register(`ip=10.20.0.${i}&artifactId=flood`)).status);
		expect(statuses.slice(0, 5)).toEqual([201, 201, 201, 201, 201]);
		expect(statuses.slice(5)).toContain(429);
		const limited = await register("ip=10.20.1.1&artifactId=flood");
		expect(limited.status).toBe(429);
		expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
		// Registering a known node again counts too (each is a boot-timeline entry); an operator is not limited.
		// (Three in a row: at 1 a second, a slow machine may have earned one token back meanwhile.)
		const again: number[] = [];
		for (let i = 0; i < 3; i++) again.push((await register("ip=10.20.0.1&artifactId=flood")).status);
		expect(again).toContain(429);
		expect((await provisioner.api("/localnodes", { method: "POST", json: { ip: "10.20.2.1", artifactId: "flood" } })).status).toBe(201);
	});

	it("answers lists whose sort or searchFields carry stray separators, never with a 500", async () => {
		for (const query of ["sort=id%20", "sort=-id,", "sort=%2Cid", "search=10&searchFields=ip%20"]) expect([query, (await provisioner.api(`/localnodes?${query}`)).status]).toEqual([query, 200]);
		for (const query of ["sort=%2Cx", "searchFields=%20hostKeyx&search=a"]) expect([query, (await provisioner.api(`/localnodes?${query}`)).status]).toEqual([query, 422]);
	});

	it("keeps one row per address however it is spelt", async () => {
		const create = (ip: string) => provisioner.api("/localnodes", { method: "POST", json: { ip, artifactId: "spelling" } });
		const first = await (await create("10.30.0.5")).json();
		const mapped = await create("::ffff:10.30.0.5");
		expect(mapped.status).toBe(200);
		expect((await mapped.json()).id).toBe(first.id);
		const v6 = await (await create("FE80:0::AB")).json();
		expect(v6.ip).toBe("fe80::ab");
		for (const spelling of ["fe80::ab", "fe80:0:0:0:0:0:0:ab", "FE80::00AB"]) expect((await (await create(spelling)).json()).id).toBe(v6.id);
	});
});
