import fs from "node:fs";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { SYSLINUX_FRAGMENTS } from "../src";

/** The builder framework's contract, exercised on the simplest builder (file copies). */
describe.each(DATABASES)("syslinuxs on %s", (database) => {
	let provisioner: TestProvisioner;
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: ["gateway", "syslinuxs", "syslinuxs-worker"] });
	});
	afterAll(() => provisioner?.stop());

	const done = (id: number) =>
		eventually(async () => {
			const row = await (await provisioner.api(`/syslinuxs/${id}`)).json();
			return row.status === "done" || row.status === "failed" ? row : undefined;
		}, 30_000, `syslinuxs ${id} finished`);

	it.each(Object.entries(SYSLINUX_FRAGMENTS))("builds %s: queued at once, then done with Debian's bytes at its url", async (fragment, { file }) => {
		const response = await provisioner.api("/syslinuxs", { method: "POST", json: { fragment } });
		expect(response.status).toBe(201);
		const created = await response.json();
		expect(created).toMatchObject({ fragment, status: "queued", progress: 0 });
		expect(created).not.toHaveProperty("jobId");
		const row = await done(created.id);
		expect(row).toMatchObject({ status: "done", progress: 100, error: null });
		expect(row.url).toBe(`${provisioner.baseUrl}/api/artifacts/syslinuxs/${created.id}/${fragment}`);
		const artifact = await fetch(row.url);
		expect(artifact.status).toBe(200);
		expect(Buffer.from(await artifact.arrayBuffer()).equals(fs.readFileSync(file))).toBe(true);
	});

	it.each([
		[{ fragment: "../../etc/passwd" }, "fragment"],
		[{ fragment: "/usr/lib/ISOLINUX/isolinux.bin" }, "fragment"],
		[{ fragment: "isolinux.bin\u0000" }, "fragment"],
		[{ fragment: "$(reboot)" }, "fragment"],
		[{ fragment: 7 }, "fragment"],
		[{}, "fragment"],
		[{ fragment: "isolinux.bin", path: "/etc/shadow" }, ""],
	])("refuses %j with a 422 naming the field, and writes no row", async (body, field) => {
		const before = (await (await provisioner.api("/syslinuxs")).json()).total;
		const response = await provisioner.api("/syslinuxs", { method: "POST", json: body });
		expect(response.status).toBe(422);
		const error = await response.json();
		if (field) expect(JSON.stringify(error.data)).toContain(field);
		expect((await (await provisioner.api("/syslinuxs")).json()).total).toBe(before);
	});

	it("reuses a done artifact for identical inputs, and a DELETE of one row leaves the other's artifact", async () => {
		const first = await done((await (await provisioner.api("/syslinuxs", { method: "POST", json: { fragment: "ldlinux.c32" } })).json()).id);
		const response = await provisioner.api("/syslinuxs", { method: "POST", json: { fragment: "ldlinux.c32" } });
		expect(response.status).toBe(201);
		const second = await response.json();
		expect(second.id).not.toBe(first.id);
		expect(second).toMatchObject({ status: "done", progress: 100 });
		expect((await fetch(second.url)).status).toBe(200);

		expect((await provisioner.api(`/syslinuxs/${first.id}`, { method: "DELETE" })).status).toBe(200);
		expect((await provisioner.api(`/syslinuxs/${first.id}`)).status).toBe(404);
		expect((await fetch(second.url)).status).toBe(200);
		// Every row that shared it is gone: so is the artifact.
		const rows = (await (await provisioner.api("/syslinuxs?pageSize=100")).json()).rows.filter((r: { url: string }) => r.url === second.url);
		for (const row of rows) expect((await provisioner.api(`/syslinuxs/${row.id}`, { method: "DELETE" })).status).toBe(200);
		expect((await fetch(second.url)).status).toBe(404);
	});

	it("has no update (a build is what it was built from)", async () => {
		const created = await (await provisioner.api("/syslinuxs", { method: "POST", json: { fragment: "isohdpfx.bin" } })).json();
		const response = await provisioner.api(`/syslinuxs/${created.id}`, { method: "PUT", json: { fragment: "ldlinux.c32" } });
		expect(response.status).toBe(404);
	});
});
