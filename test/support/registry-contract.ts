import { DATABASES, startTestProvisioner, type DatabaseKind, type TestProvisioner } from "./provisioner";

/**
 * The REST contract every text registry keeps (mainscripts, subscripts, kickstarts, pre- and
 * post-boot scripts). They share one mixin, so the whole contract runs for one registry on SQLite
 * and on PostgreSQL ("full"), and every other registry gets a smoke test of its own wiring on
 * SQLite: created, served raw to a booting host, changed and served anew.
 */
export function describeTextRegistry(name: string, sample: string, depth: "full" | "smoke" = "smoke"): void {
	const databases: DatabaseKind[] = depth === "full" ? DATABASES : ["sqlite"];
	describe.each(databases)(`${name} on %s`, (database) => {
		let provisioner: TestProvisioner;
		const api = (path: string, init?: RequestInit & { json?: unknown }) => provisioner.api(`/${name}${path}`, init);
		const count = async () => (await (await api("")).json()).total as number;

		beforeAll(async () => {
			provisioner = await startTestProvisioner({ database, services: ["gateway", name] });
		});
		afterAll(() => provisioner?.stop());

		it("creates with 201 and serves the raw text to booting hosts", async () => {
			const created = await api("", { method: "POST", json: { text: sample } });
			expect(created.status).toBe(201);
			const row = await created.json();
			expect(row).toMatchObject({ id: expect.any(Number), text: sample });
			const raw = await api(`/${row.id}`);
			expect(raw.status).toBe(200);
			expect(raw.headers.get("content-type")).toMatch(/^text\/plain/);
			expect(await raw.text()).toBe(sample);
		});

		it("serves a booting host the new text right after a change, inside the machine cache's lifetime", async () => {
			const { id } = await (await api("", { method: "POST", json: { text: sample } })).json();
			// Anonymous, as a booting host asks: the machine path, answered from its cache the second time.
			const machine = () => fetch(`${provisioner.baseUrl}/api/${name}/${id}`).then((r) => r.text());
			expect(await machine()).toBe(sample);
			expect(await machine()).toBe(sample);
			const changed = `${sample}\n# changed ${Date.now()}`;
			expect((await api(`/${id}`, { method: "PUT", json: { text: changed } })).status).toBe(200);
			expect(await machine()).toBe(changed);
		});

		// The rest of the contract, once: the mixin is the same for every registry.
		if (depth !== "full") return;

		it("answers JSON when asked with Accept: application/json", async () => {
			const { id } = await (await api("", { method: "POST", json: { text: sample } })).json();
			const res = await api(`/${id}`, { headers: { Accept: "application/json" } });
			expect(res.headers.get("content-type")).toMatch(/^application\/json/);
			expect(await res.json()).toMatchObject({ id, text: sample, createdAt: expect.any(String), updatedAt: expect.any(String) });
		});

		it("lists with paging, sorting and search", async () => {
			const marker = `marker-${Date.now()}`;
			for (let i = 0; i < 3; i++) await api("", { method: "POST", json: { text: `${sample}\n# ${marker} ${i}` } });
			const page = await (await api(`?search=${marker}&searchFields=text&sort=-id&pageSize=2&page=1`)).json();
			expect(page).toMatchObject({ total: 3, page: 1, pageSize: 2, totalPages: 2 });
			expect(page.rows).toHaveLength(2);
			expect(page.rows[0].id).toBeGreaterThan(page.rows[1].id);
			expect(page.rows[0].text).toContain(`${marker} 2`);
		});

		it("updates and deletes, then answers 404", async () => {
			const { id } = await (await api("", { method: "POST", json: { text: sample } })).json();
			const updated = await api(`/${id}`, { method: "PUT", json: { text: "#!ipxe\necho changed" } });
			expect(updated.status).toBe(200);
			expect(await (await api(`/${id}`)).text()).toBe("#!ipxe\necho changed");
			expect((await api(`/${id}`, { method: "DELETE" })).status).toBe(200);
			const gone = await api(`/${id}`);
			expect(gone.status).toBe(404);
			expect(await gone.json()).toMatchObject({ name: "NotFoundError", code: 404, type: "NOT_FOUND" });
			expect((await api(`/${id}`, { method: "PUT", json: { text: "x" } })).status).toBe(404);
			expect((await api(`/${id}`, { method: "DELETE" })).status).toBe(404);
		});

		it.each([
			["missing text", {}, "text"],
			["text of the wrong type", { text: 42 }, "text"],
			["empty text", { text: "" }, "text"],
			["text over 1 MiB", { text: "x".repeat(1024 * 1024 + 1) }, "text"],
			["a NUL byte", { text: "#!ipxe\u0000" }, "text"],
			["an unknown field", { text: "ok", shell: "$(reboot)" }, "shell"],
		])("refuses %s with a 422 naming the field and writes nothing", async (_what, body, field) => {
			const before = await count();
			const res = await api("", { method: "POST", json: body });
			expect(res.status).toBe(422);
			const error = await res.json();
			expect(error).toMatchObject({ name: "ValidationError", code: 422, type: "VALIDATION_ERROR" });
			expect(error.data.map((d: { field: string }) => d.field)).toContain(field);
			expect(error.message).toContain(field);
			expect(await count()).toBe(before);
		});

		it("refuses bad ids, sort columns and search fields with 4xx, never 5xx", async () => {
			expect((await api("/abc")).status).toBe(422);
			expect((await api("/-1")).status).toBe(422);
			expect((await api("/999999")).status).toBe(404);
			const sort = await api("?sort=text;DROP TABLE x");
			expect(sort.status).toBe(422);
			expect((await sort.json()).data[0].field).toBe("sort");
			expect((await api("?searchFields=password&search=x")).status).toBe(422);
		});

		it("refuses a malformed JSON body with a 4xx", async () => {
			const res = await api("", { method: "POST", body: "{not json", headers: { "Content-Type": "application/json" } });
			expect(res.status).toBeGreaterThanOrEqual(400);
			expect(res.status).toBeLessThan(500);
		});
	});
}
