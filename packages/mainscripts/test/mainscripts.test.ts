import { DATABASES, startTestProvisioner, type TestProvisioner } from "../../../test/support/provisioner";

describe.each(DATABASES)("mainscripts on %s", (database) => {
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: ["gateway", "mainscripts"] });
	});
	afterAll(() => provisioner?.stop());

	it("stores a script and serves it back as raw text", async () => {
		const text = "#!ipxe\nchain http://example/api/subscripts/1";
		const created = await provisioner.api("/mainscripts", { method: "POST", json: { text } });
		expect(created.status).toBe(201);
		const row = await created.json();
		const raw = await provisioner.api(`/mainscripts/${row.id}`);
		expect(raw.headers.get("content-type")).toMatch(/^text\/plain/);
		expect(await raw.text()).toBe(text);
	});
});
