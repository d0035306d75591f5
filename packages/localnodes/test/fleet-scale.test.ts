import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import type { Model, ModelStatic, Sequelize } from "sequelize";
import type { Reachability, ReachabilityStats } from "../src/reachability";

const SITE = `fleet-${process.pid}`;

/** What these tests read and drive of the localnodes service in the provisioner's process. */
interface LocalnodesInProcess {
	reachability: Reachability;
	reachabilityTimer: NodeJS.Timeout;
	settings: { reachBatchesPerPass: number; sitesPerPass: number };
	refreshReachability(kind: "due" | "schedule"): Promise<void>;
	adapter: { db: Sequelize; model: ModelStatic<Model> };
}

/** The n-th stand-in node's loopback address (ALLOW_LOOPBACK_NODES): 127.1.0.1, 127.1.0.2, … */
const loopback = (n: number) => `127.${1 + Math.floor(n / 65536)}.${Math.floor(n / 256) % 256}.${n % 256}`;

/**
 * Issue 17: registering costs the same at any fleet size. A registration is an indexed upsert and
 * only marks its site as due; the site's reachability pass comes once for a burst, and takes a
 * bounded batch (never-checked and re-registered nodes first), never the whole fleet.
 */
describe.each(DATABASES)("localnodes at fleet scale on %s", (database) => {
	let provisioner: TestProvisioner;
	let service: LocalnodesInProcess;
	const stats = (): ReachabilityStats => ({ ...service.reachability.stats });
	const register = (ip: string, site = SITE) => fetch(`${provisioner.baseUrl}/api/localnodes?ip=${ip}&artifactId=${site}&pingable=true`, { method: "POST" });
	/** Rows written straight into the table: a fleet that is there already. */
	const seed = async (site: string, from: number, count: number, reachableCheckedAt: Date | null) => {
		const rows = Array.from({ length: count }, (_, i) => ({ ip: loopback(from + i), artifactId: site, pingable: true, sshPort: 22, reachable: reachableCheckedAt ? false : null, reachableCheckedAt }));
		for (let at = 0; at < rows.length; at += 500) await service.adapter.model.bulkCreate(rows.slice(at, at + 500));
	};
	const idle = () => eventually(() => !service.reachability.run && !service.reachability.timer && service.reachability.due.size === 0, 30_000, "reachability passes finished");

	beforeAll(async () => {
		provisioner = await startTestProvisioner({
			database,
			services: ["gateway", "localnodes", "scriptruns", "boots", "enrolments", "distributors", "distributor-worker"],
			env: { CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, ALLOW_LOOPBACK_NODES: "true", REGISTRATION_BURST: "10000", REGISTRATION_RATE: "1000" },
		});
		service = provisioner.broker.getLocalService("localnodes") as unknown as LocalnodesInProcess;
		// The 30-second schedule would add its own passes at any moment: its pass is run by hand below.
		clearInterval(service.reachabilityTimer);
		// The site's distributor is online: reachability is checked from it.
		await eventually(() => provisioner.broker.call("distributors.siteNode", { artifactId: SITE }).then(() => true, () => false), 30_000, "the site's distributor online");
	}, 60_000);
	afterAll(() => provisioner?.stop());

	it("declares the indexes the lists and the upsert use", async () => {
		const queries = service.adapter.db.getQueryInterface();
		const described = async (table: string) => (await queries.showIndex(table)) as { name: string; unique: boolean; fields: { attribute: string }[] }[];
		const indexes = async (table: string) => (await described(table)).map((i) => ({ unique: Boolean(i.unique), fields: i.fields.map((f) => f.attribute) }));
		const localnodes = await indexes("localnodes");
		// The registration's upsert key, unique: one row per address and site (and the search by ip).
		expect(localnodes).toContainEqual({ unique: true, fields: ["ip", "artifactId"] });
		// Search by site, and the reachability pass's batches (never-checked, then stalest).
		expect(localnodes).toContainEqual({ unique: false, fields: ["artifactId", "reachableCheckedAt", "id"] });
		const scriptruns = await indexes("scriptruns");
		for (const field of ["ip", "localnodeId", "artifactId"]) expect(scriptruns).toContainEqual({ unique: false, fields: [field] });
		const boots = await indexes("boots");
		for (const field of ["ip", "mac", "artifactId"]) expect(boots).toContainEqual({ unique: false, fields: [field] });
		// The lists' substring search (LIKE '%…%') by address and MAC: trigram indexes — pg_trgm GIN
		// indexes on PostgreSQL, FTS5 trigram tables kept by triggers on SQLite (core/text-search.ts).
		const trigram = database === "postgres"
			? ((await service.adapter.db.query("SELECT indexname AS name FROM pg_indexes WHERE indexdef LIKE '%USING gin%gin_trgm_ops%' ORDER BY indexname"))[0] as { name: string }[])
			: ((await service.adapter.db.query("SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%fts5(%trigram%' ORDER BY name"))[0] as { name: string }[]);
		expect(trigram.map((r) => r.name)).toEqual(
			database === "postgres" ? ["boots_ip_search", "boots_mac_search", "localnodes_ip_search", "scriptruns_ip_search"] : ["boots_fts_ip", "boots_fts_mac", "localnodes_fts_ip", "scriptruns_fts_ip"],
		);
	});

	it("checks a burst of new registrations in one pass that reads only them, not the site's fleet", async () => {
		await seed(SITE, 10_000, 3000, new Date());
		await idle();
		const before = stats();
		const burst = Array.from({ length: 40 }, (_, i) => loopback(20_000 + i));
		const statuses = await Promise.all(burst.map(async (ip) => (await register(ip)).status));
		expect(statuses.every((s) => s === 201)).toBe(true);
		// Every one of them is checked from the site's distributor, without holding up its registration.
		await eventually(async () => {
			const { rows } = await (await provisioner.api(`/localnodes?search=127.1.78.&searchFields=ip&pageSize=100`)).json();
			return rows.length === 40 && rows.every((r: { reachableCheckedAt: string | null }) => r.reachableCheckedAt !== null);
		}, 20_000, "the burst checked");
		await idle();
		const after = stats();
		// One pass (two if the burst straddled the coalescing window), one reach call per pass, and the
		// work is the 40 new nodes — a pass over the site would have checked 3,040.
		expect(after.passes - before.passes).toBeGreaterThanOrEqual(1);
		expect(after.passes - before.passes).toBeLessThanOrEqual(2);
		expect(after.reachCalls - before.reachCalls).toBeLessThanOrEqual(after.passes - before.passes);
		expect(after.nodesChecked - before.nodesChecked).toBe(40);
		expect(after.rowsRead - before.rowsRead).toBe(40);
	}, 60_000);

	it("rechecks a node that registers again, alone", async () => {
		await idle();
		const before = stats();
		expect((await register(loopback(10_005))).status).toBe(200);
		await eventually(async () => stats().nodesChecked > before.nodesChecked, 10_000, "the re-registered node checked");
		await idle();
		expect(stats().nodesChecked - before.nodesChecked).toBe(1);
	}, 30_000);

	it("bounds a pass: a site of never-checked nodes is worked through in batches, new ones first", async () => {
		await idle();
		await seed(SITE, 30_000, 5000, null);
		const before = stats();
		expect((await register(loopback(40_000))).status).toBe(201);
		await eventually(async () => (await service.adapter.model.count({ where: { artifactId: SITE, reachableCheckedAt: null } })) === 0, 60_000, "every never-checked node checked");
		const after = stats();
		const budget = 1024 * service.settings.reachBatchesPerPass;
		expect(after.largestPass).toBeLessThanOrEqual(budget);
		expect(after.passes - before.passes).toBeGreaterThanOrEqual(Math.ceil(5001 / budget));
		expect(after.nodesChecked - before.nodesChecked).toBe(5001);
		// A site without a distributor online costs a registration nothing beyond its row.
		const quiet = stats();
		expect((await register(loopback(50_000), `${SITE}-elsewhere`)).status).toBe(201);
		await idle();
		expect(stats().rowsRead).toBe(quiet.rowsRead);
	}, 90_000);

	it("checks on the site's schedule the stalest nodes first, at most a pass's budget", async () => {
		await idle();
		const hourAgo = new Date(Date.now() - 3600_000);
		await seed(SITE, 60_000, 6000, hourAgo);
		const before = stats();
		await service.refreshReachability("schedule");
		const checked = stats().nodesChecked - before.nodesChecked;
		const budget = 1024 * service.settings.reachBatchesPerPass;
		expect(checked).toBe(budget);
		// The budget went to the stalest: an hour-old check, in id order; the rest wait for the next pass.
		const left = await service.adapter.model.count({ where: { artifactId: SITE, reachableCheckedAt: hourAgo } });
		expect(left).toBe(6000 - budget);
		const first = await service.adapter.model.findOne({ where: { ip: loopback(60_000), artifactId: SITE } });
		const row = await (await provisioner.api(`/localnodes/${first!.get("id")}`)).json();
		expect(new Date(row.reachableCheckedAt).getTime()).toBeGreaterThan(hourAgo.getTime());
	}, 60_000);

	it("gives every online site its turn when there are more than a scheduled pass takes", async () => {
		await idle();
		const distributors = provisioner.broker.getLocalService("distributors") as unknown as { adapter: { model: { bulkCreate(rows: object[]): Promise<{ id: number }[]>; destroy(options: object): Promise<number> } }; syncTimer: NodeJS.Timeout };
		// Distributors of two more sites, online on nodes elsewhere (rows as their workers would have made
		// them). The manager marks rows of workers it does not see offline every 10 s: not during this test.
		clearInterval(distributors.syncTimer);
		const others = [`${SITE}-rotation-a`, `${SITE}-rotation-b`];
		const rows = await distributors.adapter.model.bulkCreate(others.map((artifactId, i) => ({ artifactId, identity: `rotation-${process.pid}-${i}`, nodeID: `elsewhere-${i}`, online: true })));
		const asked: string[] = [];
		const call = provisioner.broker.call.bind(provisioner.broker);
		const spy = jest.spyOn(provisioner.broker, "call").mockImplementation(((action: string, params: { artifactId?: string }, opts?: object) => {
			if (action === "distributors.siteNode" && params?.artifactId) asked.push(params.artifactId);
			return call(action, params, opts);
		}) as typeof provisioner.broker.call);
		const sitesPerPass = service.settings.sitesPerPass;
		service.settings.sitesPerPass = 1;
		try {
			const passes: string[][] = [];
			for (let pass = 0; pass < 4; pass++) {
				asked.length = 0;
				await service.refreshReachability("schedule");
				passes.push([...asked]);
			}
			// One site a pass, in turn — the site after the first page gets its pass — and then the first again.
			expect(passes).toEqual([[SITE], [others[0]], [others[1]], [SITE]]);
		} finally {
			service.settings.sitesPerPass = sitesPerPass;
			spy.mockRestore();
			await distributors.adapter.model.destroy({ where: { id: rows.map((r) => r.id) } });
		}
	}, 60_000);
});
