import { DATABASES, startTestProvisioner, type TestProvisioner } from "../../../test/support/provisioner";

// The seed tutorial's keys.
const PUBLIC_KEY =
	"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB69xaEXw3y8PZeV6mjkTfK8X3z/0GlWe5dzuWcccD8fVHFl6W+XZ6qN+a8h0RD6OcFbk1mYTyh8sV2KbyIFNBk= pojntfx@pojntfx-x230-fedora\n";
const PRIVATE_KEY =
	"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS\n1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQQevcWhF8N8vD2Xlepo5E3yvF98/9Bp\nVnuXc7lnHHA/H1RxZelvl2eqjfmvIdEQ+jnBW5NZmE8ofLFdim8iBTQZAAAAuPZWcbr2Vn\nG6AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB69xaEXw3y8PZeV\n6mjkTfK8X3z/0GlWe5dzuWcccD8fVHFl6W+XZ6qN+a8h0RD6OcFbk1mYTyh8sV2KbyIFNB\nkAAAAhAOUvaCmEoMgsNL6Hl2XliKnMSvVOhXYyQqjGds21VWkKAAAAG3Bvam50ZnhAcG9q\nbnRmeC14MjMwLWZlZG9yYQECAwQ\n-----END OPENSSH PRIVATE KEY-----\n";
const SITE = "felicitas.pojtinger.swabia.sol";

describe.each(DATABASES)("sshkeys on %s", (database) => {
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: ["gateway", "sshkeys"] });
	});
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
});
