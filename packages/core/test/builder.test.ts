import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import {
	DataTypes,
	builderManagerMixin,
	builderWorkerMixin,
	createBroker,
	inputsHash,
	invalid,
	loadConfig,
	storeFor,
	type BuildContext,
	type BuilderSpec,
} from "@clusterplatform/core";
import { eventually } from "@clusterplatform/test-kit/ports";
import { startRedis, type TestServer } from "@clusterplatform/test-kit/servers";

/**
 * The builder framework with a builder of the test's own, so a build can be held at a gate:
 * progress values, failures, result columns and work-dir cleanup are observed deterministically
 * through the real manager, worker, BullMQ on redis-server and SQLite.
 */
const gates = new Map<string, () => void>();
const workDirs: string[] = [];
let closing = false;
function gate(name: string): Promise<void> {
	if (closing) return Promise.resolve();
	return new Promise((resolve) => gates.set(name, resolve));
}
async function open(name: string): Promise<void> {
	await eventually(() => gates.has(name), 30_000, `the build reached gate ${name}`);
	gates.get(name)!();
	gates.delete(name);
}

const SPEC: BuilderSpec = {
	name: "testbuilds",
	fields: { word: { type: DataTypes.STRING(32), allowNull: false }, mode: { type: DataTypes.STRING(16), allowNull: false } },
	params: { word: { type: "string", pattern: /^[a-z]{1,32}$/ }, mode: { type: "enum", values: ["gated", "flaky", "refused", "quick"] } },
	resultFields: { letters: { type: DataTypes.INTEGER, allowNull: true } },
	validate(inputs) {
		if (inputs.word === "forbidden") invalid("word", "is forbidden");
	},
	artifactName: () => "word.txt",
};

async function build(ctx: BuildContext) {
	workDirs.push(ctx.workDir);
	const { word, mode } = ctx.inputs;
	if (mode === "refused") invalid("word", `the toolchain refuses "${word}"`);
	if (mode === "flaky") throw new Error(`toolchain crashed on ${word}`);
	if (mode === "gated") {
		await ctx.progress(25);
		await gate(`${word}-25`);
		await ctx.progress(60);
		await gate(`${word}-60`);
	}
	const file = path.join(ctx.workDir, "word.txt");
	await fsp.writeFile(file, word);
	return { file, fields: { letters: word.length } };
}

describe("builder framework", () => {
	let redis: TestServer;
	let broker: ServiceBroker;
	let dataDir: string;

	beforeAll(async () => {
		redis = await startRedis();
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-builder-test-"));
		broker = createBroker(loadConfig({ DATA_DIR: dataDir, REDIS_URL: redis.url, LOG_LEVEL: "error", PUBLIC_URL: "http://127.0.0.1:9" }));
		broker.createService({ name: "testbuilds", mixins: [builderManagerMixin(SPEC)] });
		broker.createService({ name: "testbuilds-worker", mixins: [builderWorkerMixin({ ...SPEC, build, concurrency: 2 })] });
		await broker.start();
	});

	afterAll(async () => {
		closing = true;
		for (const open of gates.values()) open();
		await broker?.stop();
		await redis?.stop();
		if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
	});

	const row = (id: number) => broker.call<any, any>("testbuilds.get", { id });
	const settled = (id: number) => eventually(async () => {
		const current = await row(id);
		return ["done", "failed"].includes(current.status) ? current : undefined;
	}, 60_000, `testbuilds ${id} finished`);

	it("carries every progress value to the row while the job works, then done with url and result columns", async () => {
		const created = await broker.call<any, any>("testbuilds.create", { word: "gated", mode: "gated" });
		expect(created).toMatchObject({ status: "queued", progress: 0, url: null });
		await eventually(async () => (await row(created.id)).progress === 25, 30_000, "progress 25 on the row");
		expect((await row(created.id)).status).toBe("working");
		await open("gated-25");
		await eventually(async () => (await row(created.id)).progress === 60, 30_000, "progress 60 on the row");
		await open("gated-60");
		const finished = await settled(created.id);
		expect(finished).toMatchObject({ status: "done", progress: 100, error: null, letters: 5, url: `http://127.0.0.1:9/api/artifacts/testbuilds/${created.id}/word.txt` });
		expect(await fsp.readFile(path.join(dataDir, "artifacts", "testbuilds", String(created.id), "word.txt"), "utf8")).toBe("gated");
	});

	it("fails a job the toolchain refuses (a 4xx) at once, with the reason, without retries", async () => {
		const created = await broker.call<any, any>("testbuilds.create", { word: "nope", mode: "refused" });
		const finished = await settled(created.id);
		expect(finished.status).toBe("failed");
		expect(finished.error).toContain('the toolchain refuses "nope"');
	});

	it("retries a crashing build, then records failed with the reason", async () => {
		const created = await broker.call<any, any>("testbuilds.create", { word: "crash", mode: "flaky" });
		const finished = await settled(created.id);
		expect(finished).toMatchObject({ status: "failed", error: "toolchain crashed on crash" });
		expect(workDirs.filter((dir) => dir.includes(`testbuilds-${created.id}-`)).length).toBe(3);
	});

	it("removes each attempt's private work dir", () => {
		expect(workDirs.length).toBeGreaterThan(0);
		for (const dir of workDirs) expect(fs.existsSync(dir)).toBe(false);
	});

	it("validates across fields before anything is written", async () => {
		const before = await broker.call<number, any>("testbuilds.count", {});
		await expect(broker.call("testbuilds.create", { word: "forbidden", mode: "quick" })).rejects.toMatchObject({ code: 422, data: [{ field: "word" }] });
		await expect(broker.call("testbuilds.create", { word: "UPPER", mode: "quick" })).rejects.toMatchObject({ code: 422 });
		expect(await broker.call("testbuilds.count", {})).toBe(before);
	});

	it("hashes normalized inputs: key order does not matter, values and builder version do", () => {
		expect(inputsHash(SPEC, { word: "a", mode: "quick" })).toBe(inputsHash(SPEC, { mode: "quick", word: "a" }));
		expect(inputsHash(SPEC, { word: "a", mode: "quick" })).not.toBe(inputsHash(SPEC, { word: "b", mode: "quick" }));
		expect(inputsHash(SPEC, { word: "a", mode: "quick" })).not.toBe(inputsHash({ ...SPEC, version: "2" }, { word: "a", mode: "quick" }));
	});

	it("a DELETE while the job still works leaves no artifact behind", async () => {
		const created = await broker.call<any, any>("testbuilds.create", { word: "orphan", mode: "gated" });
		await eventually(async () => (await row(created.id)).progress === 25, 30_000, "the job is working");
		await broker.call("testbuilds.remove", { id: created.id });
		await open("orphan-25");
		await open("orphan-60");
		const key = `testbuilds/${created.id}/word.txt`;
		const store = storeFor(loadConfig({ DATA_DIR: dataDir, PUBLIC_URL: "http://127.0.0.1:9" }));
		// The worker uploads it, the manager sees no row for the job and removes it.
		await eventually(async () => (await store.stat(key)) === null && workDirs.some((d) => d.includes(`testbuilds-${created.id}-`)), 30_000, "the orphan artifact removed");
	});
});
