import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { parseLenientJson } from "../src/json-body";

describe("JSON bodies", () => {
	it("forgives trailing commas only, never inside strings, and keeps __proto__ an own field", () => {
		expect(parseLenientJson('{"a": [1, 2,], "b": "x,}",\n}')).toEqual({ a: [1, 2], b: "x,}" });
		expect(parseLenientJson('{"s": "a\\",]"}')).toEqual({ s: 'a",]' });
		const polluted = parseLenientJson('{"__proto__": {"admin": true}}') as Record<string, unknown>;
		expect(Object.getPrototypeOf(polluted)).toBe(Object.prototype);
		expect(Object.keys(polluted)).toEqual(["__proto__"]);
		for (const bad of ['{"a": 1 // comment\n}', "{a: 1}", '{"a": 1} {}', "[1,,2]", '"\u0000', "{".repeat(1000) + "}".repeat(1000)]) {
			expect(() => parseLenientJson(bad)).toThrow(/not valid JSON/);
		}
	});

	it("forgives trailing commas in linear time, however many commas and spaces", () => {
		// The old retry (drop trailing commas, parse again) scanned ahead of every comma: ~1.3 s per 4 MiB.
		const body = (kib: number) => `{"a": [${"1, ".repeat(kib * 256)}1,], "b": "x",${" ".repeat(kib * 256)}${'"c": 1,'.repeat(kib * 64)}}`;
		const timed = (text: string) => {
			const started = process.hrtime.bigint();
			parseLenientJson(text);
			return Number(process.hrtime.bigint() - started) / 1e6;
		};
		timed(body(256)); // warm-up
		const [one, four] = [Math.min(timed(body(256)), timed(body(256))), Math.min(timed(body(1024)), timed(body(1024)))];
		console.log(`lenient parse: ~¼ MiB ${one.toFixed(0)} ms, ~1 MiB ${four.toFixed(0)} ms (ratio ${(four / one).toFixed(1)}; linear ≈ 4, quadratic ≈ 16)`);
		expect(four / one).toBeLessThan(8);
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
