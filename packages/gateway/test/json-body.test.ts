import { startTestProvisioner, type TestProvisioner } from "../../../test/support/provisioner";
import { withoutTrailingCommas } from "../src/json-body";

describe("JSON bodies", () => {
	it("drops only commas before a closing bracket, never inside strings", () => {
		expect(withoutTrailingCommas('{"a": [1, 2,], "b": "x,}",\n}')).toBe('{"a": [1, 2], "b": "x,}"\n}');
		expect(withoutTrailingCommas('{"s": "a\\",]"}')).toBe('{"s": "a\\",]"}');
	});

	describe("through the gateway", () => {
		let provisioner: TestProvisioner;
		beforeAll(async () => {
			provisioner = await startTestProvisioner({ services: ["gateway", "mainscripts"], env: { BODY_LIMIT: "65536" } });
		});
		afterAll(() => provisioner?.stop());
		const post = (body: string) => provisioner.api("/mainscripts", { method: "POST", body, headers: { "Content-Type": "application/json" } });

		it("accepts the seed's body with a trailing comma", async () => {
			const res = await post('{\n    "text": "curl https://install.example/ | sudo bash\\nip a | grep zt",\n}');
			expect(res.status).toBe(201);
			expect((await res.json()).text).toBe("curl https://install.example/ | sudo bash\nip a | grep zt");
		});

		it("answers a body that is not JSON with a 400 saying so", async () => {
			const res = await post("{not json");
			expect(res.status).toBe(400);
			expect(await res.json()).toMatchObject({ code: 400, type: "INVALID_JSON", data: { reason: expect.stringMatching(/^the body is not JSON/) } });
		});

		it("answers a body over BODY_LIMIT with a 413", async () => {
			const res = await post(JSON.stringify({ text: "x".repeat(70_000) }));
			expect(res.status).toBe(413);
			expect(await res.json()).toMatchObject({ code: 413, type: "PAYLOAD_TOO_LARGE" });
		});
	});
});
