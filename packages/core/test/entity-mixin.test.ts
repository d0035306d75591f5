import type { ServiceBroker } from "moleculer";
import { DataTypes, createBroker, entityMixin, loadConfig, textParam } from "@clusterplatform/core";
import { scratchDir } from "@clusterplatform/test-kit/scratch";

/**
 * The entity mixin on an in-process broker and a SQLite file, called through the broker as other
 * services call it: a mistake in the mixin fails here in a second, not after a provisioner boot.
 */
describe("entityMixin on an in-process broker", () => {
	let dir: string;
	let broker: ServiceBroker;

	beforeAll(async () => {
		dir = scratchDir("cpp-entity-");
		broker = createBroker(loadConfig({ DATA_DIR: dir, LOG_LEVEL: "fatal" }), { logger: false });
		broker.createService({
			name: "notes",
			mixins: [
				entityMixin({
					name: "notes",
					fields: { text: { type: DataTypes.TEXT, allowNull: false }, secret: { type: DataTypes.TEXT, allowNull: true } },
					params: { text: textParam(1024), secret: { type: "string", optional: true } },
					hiddenFields: ["secret"],
				}),
			],
		});
		await broker.start();
	});
	afterAll(async () => {
		await broker?.stop();
	});

	const call = <T = any>(action: string, params: object = {}) => broker.call<T, object>(`notes.${action}`, params, { meta: { $responseJSON: true } });

	it("creates, gets, updates and removes a row; hidden fields never come back", async () => {
		const created = await call("create", { text: "first", secret: "s3cret" });
		expect(created).toMatchObject({ id: expect.any(Number), text: "first" });
		expect(created).not.toHaveProperty("secret");
		expect(JSON.stringify(await call("get", { id: created.id }))).not.toContain("s3cret");
		expect(await call("update", { id: created.id, text: "changed" })).toMatchObject({ id: created.id, text: "changed" });
		await call("remove", { id: created.id });
		await expect(call("get", { id: created.id })).rejects.toMatchObject({ code: 404 });
	});

	it("lists with search and sort on readable columns only", async () => {
		for (const text of ["alpha one", "alpha two", "beta"]) await call("create", { text });
		const page = await call("list", { search: "alpha", searchFields: "text", sort: "-id", pageSize: 10 });
		expect(page.rows.map((r: { text: string }) => r.text)).toEqual(["alpha two", "alpha one"]);
		await expect(call("list", { search: "s3cret", searchFields: "secret" })).rejects.toMatchObject({ code: 422 });
		await expect(call("list", { sort: "secret" })).rejects.toMatchObject({ code: 422 });
		// A search is a LIKE, on text columns only: on PostgreSQL a number column would be a 500.
		await expect(call("list", { search: "1", searchFields: "id" })).rejects.toMatchObject({ code: 422, message: expect.stringContaining('cannot search "id"') });
	});

	it.each([
		["an unknown field", { text: "x", shell: "$(reboot)" }, "shell"],
		["a null", { text: null }, "text"],
		["a wrong type", { text: 42 }, "text"],
	])("refuses %s with a 422 naming the field, writing nothing", async (_what, params, field) => {
		const before = (await call("list", {})).total;
		await expect(call("create", params)).rejects.toMatchObject({ code: 422, data: expect.arrayContaining([expect.objectContaining({ field })]) });
		expect((await call("list", {})).total).toBe(before);
	});
});
