import { generateToken, tokenEntry } from "@clusterplatform/core";
import { DATABASES, TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";

// The seed tutorial's keys.
const PUBLIC_KEY =
	"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB69xaEXw3y8PZeV6mjkTfK8X3z/0GlWe5dzuWcccD8fVHFl6W+XZ6qN+a8h0RD6OcFbk1mYTyh8sV2KbyIFNBk= pojntfx@pojntfx-x230-fedora\n";
const PRIVATE_KEY =
	"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS\n1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQQevcWhF8N8vD2Xlepo5E3yvF98/9Bp\nVnuXc7lnHHA/H1RxZelvl2eqjfmvIdEQ+jnBW5NZmE8ofLFdim8iBTQZAAAAuPZWcbr2Vn\nG6AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB69xaEXw3y8PZeV\n6mjkTfK8X3z/0GlWe5dzuWcccD8fVHFl6W+XZ6qN+a8h0RD6OcFbk1mYTyh8sV2KbyIFNB\nkAAAAhAOUvaCmEoMgsNL6Hl2XliKnMSvVOhXYyQqjGds21VWkKAAAAG3Bvam50ZnhAcG9q\nbnRmeC14MjMwLWZlZG9yYQECAwQ\n-----END OPENSSH PRIVATE KEY-----\n";
const SITE = "felicitas.pojtinger.swabia.sol";
// Another private key (ssh-keygen -t ed25519), to replace the first one with.
const OTHER_PRIVATE_KEY =
	"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACCor8AM/S1eKqDWfLrz/jg8qZqIGLCuY67vLJbz8hvceQAAAJhUqUk2VKlJ\nNgAAAAtzc2gtZWQyNTUxOQAAACCor8AM/S1eKqDWfLrz/jg8qZqIGLCuY67vLJbz8hvceQ\nAAAEA3zaD37pqAHpkhUqvGa4TfVX6l38JhlNJ5f8wCIXYtvKivwAz9LV4qoNZ8uvP+ODyp\nmogYsK5jru8slvPyG9x5AAAAD2NsdXN0ZXJwbGF0Zm9ybQECAwQFBg==\n-----END OPENSSH PRIVATE KEY-----\n";
const READ_ONLY_TOKEN = generateToken();

describe.each(DATABASES)("sshkeys on %s", (database) => {
	let provisioner: TestProvisioner;
	const asReader = { Authorization: `Bearer ${READ_ONLY_TOKEN}` };
	beforeAll(async () => {
		provisioner = await startTestProvisioner({
			database,
			services: ["gateway", "sshkeys"],
			env: { API_TOKENS: [tokenEntry("test-admin", TEST_ADMIN_TOKEN, false), tokenEntry("auditor", READ_ONLY_TOKEN, true)].join(",") },
		});
	});

	/** The row as the database holds it, read with SQL past the service. */
	async function rawRow(id: number): Promise<{ text: string; private: unknown }> {
		const { sequelize } = (provisioner.broker.getLocalService("sshkeys") as unknown as { adapter: { model: { sequelize: { query: (sql: string, options: object) => Promise<[unknown[]]> } } } }).adapter.model;
		const [rows] = await sequelize.query("SELECT * FROM sshkeys WHERE id = ?", { replacements: [id] });
		return rows[0] as { text: string; private: unknown };
	}

	async function newPrivateKey(): Promise<number> {
		const res = await provisioner.api("/sshkeys", { method: "POST", json: { text: PRIVATE_KEY, artifactId: SITE, private: true } });
		expect(res.status).toBe(201);
		return (await res.json()).id;
	}

	async function fieldsOf422(res: Response): Promise<string[]> {
		expect(res.status).toBe(422);
		return (await res.json()).data.map((d: { field: string }) => d.field);
	}
	afterAll(() => provisioner?.stop());

	it("stores the seed's public and private keys and serves each as raw text", async () => {
		const pub = await provisioner.api("/sshkeys", { method: "POST", json: { text: PUBLIC_KEY, artifactId: SITE, private: false } });
		const priv = await provisioner.api("/sshkeys", { method: "POST", json: { text: PRIVATE_KEY, artifactId: SITE, private: true } });
		expect([pub.status, priv.status]).toEqual([201, 201]);
		const [pubRow, privRow] = [await pub.json(), await priv.json()];
		expect(await (await provisioner.api(`/sshkeys/${pubRow.id}`)).text()).toBe(PUBLIC_KEY);
		expect(await (await provisioner.api(`/sshkeys/${privRow.id}`)).text()).toBe(PRIVATE_KEY);
	});

	it("never shows private key text in a list", async () => {
		const page = await (await provisioner.api(`/sshkeys?search=${SITE}&searchFields=artifactId`)).json();
		const privateRows = page.rows.filter((row: { private: boolean }) => row.private);
		const publicRows = page.rows.filter((row: { private: boolean }) => !row.private);
		expect(privateRows.length).toBeGreaterThan(0);
		expect(publicRows.length).toBeGreaterThan(0);
		for (const row of privateRows) expect(row).not.toHaveProperty("text");
		for (const row of publicRows) expect(row.text).toBe(PUBLIC_KEY);
		expect(JSON.stringify(page)).not.toContain("PRIVATE KEY");
	});

	it.each([
		["a private key filed as public", { text: PRIVATE_KEY, artifactId: SITE, private: false }, "text"],
		["a public key filed as private", { text: PUBLIC_KEY, artifactId: SITE, private: true }, "text"],
		["a bad site tag", { text: PUBLIC_KEY, artifactId: "../etc; rm -rf /", private: false }, "artifactId"],
		["a missing site tag", { text: PUBLIC_KEY, private: false }, "artifactId"],
	])("refuses %s with a 422 naming the field", async (_what, body, field) => {
		const res = await provisioner.api("/sshkeys", { method: "POST", json: body });
		expect(res.status).toBe(422);
		expect((await res.json()).data.map((d: { field: string }) => d.field)).toContain(field);
	});

	describe("search and sort (a LIKE oracle on key text)", () => {
		it.each([
			["searchFields=text", "searchFields"],
			["searchFields=artifactId,text", "searchFields"],
			["searchFields[]=text", "searchFields"],
			["sort=text", "sort"],
			["sort=-text", "sort"],
		])("refuses %s with a 422 naming the parameter, for read-only and admin tokens", async (query, field) => {
			for (const headers of [asReader, {}]) {
				const res = await provisioner.api(`/sshkeys?search=${encodeURIComponent("-----BEGIN OPENSSH")}&${query}`, { headers });
				expect(await fieldsOf422(res)).toEqual([field]);
			}
		});

		it("still searches and sorts by the columns everyone may read", async () => {
			const res = await provisioner.api(`/sshkeys?search=${SITE}&searchFields=artifactId&sort=-id`, { headers: asReader });
			expect(res.status).toBe(200);
			expect((await res.json()).rows.length).toBeGreaterThan(0);
		});
	});

	describe("PUT /api/sshkeys/:id", () => {
		it("seals a private key's new text like create, and never echoes it", async () => {
			const id = await newPrivateKey();
			const res = await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { text: OTHER_PRIVATE_KEY } });
			expect(res.status).toBe(200);
			const body = await res.json();
			expect(body).toMatchObject({ id, private: true });
			expect(body).not.toHaveProperty("text");
			expect(JSON.stringify(body)).not.toContain("PRIVATE KEY");
			const row = await rawRow(id);
			expect(row.text.startsWith("sealed:v1:")).toBe(true);
			expect(row.text).not.toContain("PRIVATE KEY");
			expect(row.text).not.toContain(OTHER_PRIVATE_KEY.split("\n")[1]);
			expect(await (await provisioner.api(`/sshkeys/${id}`)).text()).toBe(OTHER_PRIVATE_KEY);
		});

		it("saves as the console does (text, site and the unchanged flag), and a PUT without the flag keeps the key private", async () => {
			const id = await newPrivateKey();
			const saved = await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { text: OTHER_PRIVATE_KEY, artifactId: SITE, private: true } });
			expect(saved.status).toBe(200);
			expect(await saved.json()).not.toHaveProperty("text");
			expect((await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { artifactId: SITE } })).status).toBe(200);
			expect((await rawRow(id)).text.startsWith("sealed:v1:")).toBe(true);
			expect((await fetch(`${provisioner.baseUrl}/api/sshkeys/${id}`)).status).toBe(403);
		});

		it.each([
			["private", "prose", "not a key at all"],
			["private", "a public key", PUBLIC_KEY],
			["public", "prose", "not a key at all"],
			["public", "a private key", PRIVATE_KEY],
		])("refuses to store text that is not a %s key (%s) with a 422 naming text, and changes nothing", async (kind, _what, text) => {
			const created = await provisioner.api("/sshkeys", { method: "POST", json: kind === "private" ? { text: PRIVATE_KEY, artifactId: SITE, private: true } : { text: PUBLIC_KEY, artifactId: SITE, private: false } });
			const { id } = await created.json();
			const before = await rawRow(id);
			expect(await fieldsOf422(await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { text } }))).toEqual(["text"]);
			expect(await rawRow(id)).toEqual(before);
		});

		it("refuses to make a private key public (422 naming private): an anonymous GET stays 403", async () => {
			const id = await newPrivateKey();
			expect(await fieldsOf422(await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { private: false } }))).toEqual(["private"]);
			expect(await fieldsOf422(await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { text: PUBLIC_KEY, private: false } }))).toEqual(["private"]);
			const anonymous = await fetch(`${provisioner.baseUrl}/api/sshkeys/${id}`);
			expect(anonymous.status).toBe(403);
			expect(await anonymous.text()).not.toContain("PRIVATE KEY");
			expect((await fetch(`${provisioner.baseUrl}/api/sshkeys/${id}`, { headers: asReader })).status).toBe(403);
			expect(Boolean((await rawRow(id)).private)).toBe(true);
			expect((await (await provisioner.api(`/sshkeys/${id}`, { headers: { Accept: "application/json" } })).json()).private).toBe(true);
		});

		it("refuses to make a public key private (422 naming private)", async () => {
			const { id } = await (await provisioner.api("/sshkeys", { method: "POST", json: { text: PUBLIC_KEY, artifactId: SITE, private: false } })).json();
			expect(await fieldsOf422(await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { text: PRIVATE_KEY, private: true } }))).toEqual(["private"]);
			expect(await (await fetch(`${provisioner.baseUrl}/api/sshkeys/${id}`)).text()).toBe(PUBLIC_KEY);
		});

		it("refuses a read-only token", async () => {
			const id = await newPrivateKey();
			const res = await provisioner.api(`/sshkeys/${id}`, { method: "PUT", json: { text: OTHER_PRIVATE_KEY }, headers: asReader });
			expect(res.status).toBe(403);
		});
	});
});
