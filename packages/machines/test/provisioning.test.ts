import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "@clusterplatform/core";
import { startProvisioner, type RunningProvisioner } from "@clusterplatform/cli";
import { freeUdpPort, isRunning, startIpmiSim, type IpmiSim } from "@clusterplatform/test-kit/ipmi-sim";
import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { describeIf, missingProgram } from "@clusterplatform/test-kit/requirements";
import { startNats, type TestServer } from "@clusterplatform/test-kit/servers";
import { MachinesService } from "../src";
import { macSequence } from "./macs";

/**
 * Power and provisioning through a real BMC: OpenIPMI's ipmi_sim on 127.0.0.1 holding a QEMU
 * guest's power, reached from a distributor worker of the machine's site (its own broker, over a
 * real NATS), as the machines service asks it through distributors.bmc. The booting host is played
 * by the test: it fetches /api/boot and its post-boot script and registers with the token, as the
 * tiny Linux of test/lan does.
 */

const SITE = "prov.sites.example";
/** Short, so a machine that never registers fails within the test; the registering one is far quicker. */
const TIMEOUT_S = 6;
const CONCURRENCY = 2;

interface Problem {
	field: string;
	message: string;
}

const nextMac = macSequence("cc");

describeIf(missingProgram(["ipmi_sim", "ipmitool", "qemu-system-x86_64", "nats-server"]), "power and provisioning through the site's distributor", () => {
	let nats: TestServer;
	let sim: IpmiSim;

	beforeAll(async () => {
		nats = await startNats();
		sim = await startIpmiSim({ port: await freeUdpPort(), qemuArgs: ["-machine", "accel=kvm:tcg"] });
	}, 60_000);
	afterAll(async () => {
		await sim?.stop();
		await nats?.stop();
	}, 60_000);

	describe.each(DATABASES)("on %s", (database) => {
		let provisioner: TestProvisioner;
		let worker: RunningProvisioner;
		const workerDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-prov-worker-"));
		const json = async (res: Response) => ({ status: res.status, body: await res.json() });
		const post = (p: string, body: unknown) => provisioner.api(p, { method: "POST", json: body });
		const put = (p: string, body: unknown) => provisioner.api(p, { method: "PUT", json: body });
		const machineGet = (p: string) => fetch(`${provisioner.baseUrl}/api${p}`);
		const fieldsOf = (body: { data?: Problem[] }) => (body.data ?? []).map((p) => p.field);
		// Cipher suite 3: ipmi_sim does not answer ipmitool's question for the best one, which costs ~3 s a call.
		const bmc = () => ({ bmcProtocol: "ipmi", bmcAddress: sim.address, bmcPort: sim.port, bmcUser: sim.user, bmcPassword: sim.password, bmcCipherSuite: 3 });
		const machine = async (fields: Record<string, unknown>) => {
			const mac = nextMac();
			const res = await json(await post("/machines", { name: `p-${database}-${mac.replace(/:/g, "")}`, macs: [mac], artifactId: SITE, ...fields }));
			expect(res.status).toBe(201);
			return res.body as { id: number; macs: string[]; name: string };
		};
		const row = async (id: number) => (await (await provisioner.api(`/machines/${id}`)).json()) as Record<string, any>;
		let profileId: number;

		beforeAll(async () => {
			provisioner = await startTestProvisioner({
				database,
				services: ["gateway", "machines", "profiles", "selectors", "localnodes", "boots", "distributors"],
				env: { TRANSPORTER: nats.url, MACHINES_PROVISION_TIMEOUT: String(TIMEOUT_S), MACHINES_PROVISION_CONCURRENCY: String(CONCURRENCY) },
			});
			worker = await startProvisioner(
				loadConfig({ TRANSPORTER: nats.url, CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, PUBLIC_URL: provisioner.baseUrl, DATA_DIR: workerDir, NODE_ID: `prov-${database}-${process.pid}`, LOG_LEVEL: "warn", PORT: "0" }),
				["distributor-worker"],
			);
			await eventually(() => provisioner.broker.call("distributors.siteNode", { artifactId: SITE }).catch(() => undefined), 20_000, "the site's distributor online");
			const profile = await json(await post("/profiles", { name: `prov-${database}`, ipxeScript: "#!ipxe\nchain {{postbootUrl}}", postbootScript: "#!/bin/sh\ncurl -X POST '{{registerUrl}}&ip=$IP'\n" }));
			expect(profile.status).toBe(201);
			profileId = profile.body.id;
		}, 90_000);
		afterAll(async () => {
			await worker?.stop();
			await provisioner?.stop();
			fs.rmSync(workerDir, { recursive: true, force: true });
		}, 60_000);

		it("powers a machine on, reads its status and powers it off through its BMC: the guest's QEMU starts and ends", async () => {
			const m = await machine(bmc());
			const power = (action: string) => put(`/machines/${m.id}/power`, { action }).then(json);
			// The guest may still run from the other database's turn.
			expect(await power("off")).toEqual({ status: 200, body: { id: m.id, power: "off", action: "off" } });
			expect(await power("status")).toEqual({ status: 200, body: { id: m.id, power: "off", action: "status" } });
			expect(await power("on")).toEqual({ status: 200, body: { id: m.id, power: "on", action: "on" } });
			const pid = await eventually(() => sim.qemuPid() ?? undefined, 15_000, "QEMU started by power on");
			expect((await power("status")).body.power).toBe("on");
			expect(await power("off")).toEqual({ status: 200, body: { id: m.id, power: "off", action: "off" } });
			await eventually(() => !isRunning(pid) || undefined, 20_000, "QEMU ended by power off");
			const bad = await power("reboot");
			expect(bad.status).toBe(422);
			expect(fieldsOf(bad.body)).toEqual(["action"]);
		}, 120_000);

		it("answers a BMC that refuses the boot device with a 502 naming the BMC and the reason, never the password", async () => {
			const m = await machine(bmc());
			const refused = await json(await put(`/machines/${m.id}/bootdev`, { device: "pxe", persistent: true }));
			expect(refused.status).toBe(502);
			expect(refused.body.message).toContain(`ipmi 127.0.0.1:${sim.port}`);
			expect(refused.body.data).toMatchObject({ reason: "boot-device-refused", device: "pxe", bmc: `ipmi 127.0.0.1:${sim.port}`, machineId: m.id });
			expect(JSON.stringify(refused.body)).not.toContain(sim.password);
		}, 60_000);

		it("refuses a machine without a BMC (422 naming bmc) and one whose site has no distributor online (503 naming the site), writing nothing", async () => {
			const bare = await machine({});
			const noBmc = await json(await post(`/machines/${bare.id}/provision`, {}));
			expect(noBmc.status).toBe(422);
			expect(fieldsOf(noBmc.body)).toEqual(["bmc"]);
			const elsewhere = await machine({ ...bmc(), artifactId: "nowhere.sites.example" });
			const offline = await json(await post(`/machines/${elsewhere.id}/provision`, {}));
			expect(offline.status).toBe(503);
			expect(offline.body.message).toContain('site "nowhere.sites.example"');
			expect(JSON.stringify(offline.body)).not.toContain(sim.password);
			const power = await json(await put(`/machines/${elsewhere.id}/power`, { action: "status" }));
			expect(power.status).toBe(503);
			for (const id of [bare.id, elsewhere.id]) expect(await row(id)).toMatchObject({ status: "unknown", warning: null, provisionDeadline: null });
			const noProfile = await json(await post(`/machines/${elsewhere.id}/provision`, { profile: 999_999 }));
			expect(noProfile.status).toBe(422);
			expect(fieldsOf(noProfile.body)).toEqual(["profile"]);
		}, 60_000);

		it("provisions with one call: PXE refused → warning, power-cycled, provisioning; its boot and registration with the token make it ready", async () => {
			const m = await machine(bmc());
			const mac = m.macs[0]!;
			const started = await json(await post(`/machines/${m.id}/provision`, { profile: profileId }));
			expect(started.status).toBe(202);
			expect({ status: started.body.status, reason: started.body.statusReason }).toEqual({ status: "provisioning", reason: expect.stringContaining("power-cycled") });
			expect(started.body).toMatchObject({ id: m.id, profileId });
			expect(started.body.warning).toContain(`BMC ipmi 127.0.0.1:${sim.port} refused the boot device`);
			expect(started.body.statusReason).toContain("power-cycled");
			expect(JSON.stringify(started.body)).not.toContain(sim.password);
			// The power cycle really started the guest.
			await eventually(() => sim.qemuPid() ?? undefined, 15_000, "QEMU running after the power cycle");
			// The pinned profile is what the plan and /api/boot answer.
			const plan = await json(await provisioner.api(`/machines/${m.id}/plan`));
			expect(plan.body).toMatchObject({ profile: { id: profileId }, selector: null });
			expect(plan.body.why).toContain("pinned");

			// What the booting host does: its script, its post-boot script, its registration.
			const script = await (await machineGet(`/boot?mac=${mac}&arch=x86_64&platform=pcbios`)).text();
			expect(script.trim()).toBe(`#!ipxe\nchain ${provisioner.baseUrl}/api/boot/${mac}/postboot`);
			expect((await row(m.id)).statusReason).toContain("fetched its iPXE script");
			const postboot = await (await machineGet(`/boot/${mac}/postboot`)).text();
			expect((await row(m.id)).statusReason).toContain("fetched its postboot script");
			const token = /machineToken=(cpm_[A-Za-z0-9_-]+)/.exec(postboot)?.[1];
			expect(token).toBeDefined();
			const registered = await json(await fetch(`${provisioner.baseUrl}/api/localnodes?artifactId=${SITE}&mac=${mac}&machineToken=${token}&ip=10.77.0.${database === "sqlite" ? 1 : 2}`, { method: "POST" }));
			expect(registered.status).toBe(201);
			const ready = await row(m.id);
			expect(ready).toMatchObject({ status: "ready", localnodeId: registered.body.id, provisionDeadline: null });
			// Past the deadline it stays ready: the sweep fails only what is still provisioning.
			await new Promise((resolve) => setTimeout(resolve, (TIMEOUT_S + 2) * 1000));
			expect((await row(m.id)).status).toBe("ready");
			await put(`/machines/${m.id}/power`, { action: "off" });
		}, 120_000);

		it("provisions a machine once at a time across processes: the claim is a conditional write in the database (409 otherwise)", async () => {
			const m = await machine(bmc());
			// Two requests at once: one claims the row, the other finds it provisioning.
			const both = await Promise.all([post(`/machines/${m.id}/provision`, {}), post(`/machines/${m.id}/provision`, {})].map(async (res) => json(await res)));
			expect(both.map((r) => r.status).sort()).toEqual([202, 409]);
			const refused = both.find((r) => r.status === 409)!;
			expect(refused.body.message).toContain(`machine ${m.id}`);
			expect(refused.body.message).toContain("provisioning already");
			await put(`/machines/${m.id}/power`, { action: "off" });

			// Another gateway's claim, as it sits in the shared database: no BMC call from here, nothing written.
			const other = await machine(bmc());
			const service = provisioner.broker.getLocalService("machines") as unknown as { adapter: { model: { update(values: object, options: object): Promise<unknown> } } };
			const claimed = { status: "provisioning", statusReason: "power-cycling through BMC (another gateway)", provisionStartedAt: new Date(), provisionDeadline: new Date(Date.now() + 600_000) };
			await service.adapter.model.update(claimed, { where: { id: other.id } });
			provisioner.broker.broadcast("cache.clean.machines");
			const second = await json(await post(`/machines/${other.id}/provision`, {}));
			expect(second.status).toBe(409);
			expect(await row(other.id)).toMatchObject({ status: "provisioning", statusReason: claimed.statusReason, warning: null });
			// Once that provisioning ends (an operator's status), the machine can be provisioned again.
			expect((await put(`/machines/${other.id}`, { status: "failed" })).status).toBe(200);
			expect((await post(`/machines/${other.id}/provision`, {})).status).toBe(202);
			await put(`/machines/${other.id}/power`, { action: "off" });
		}, 120_000);

		it("fails a provisioned machine that does not register within the timeout, naming the last step seen", async () => {
			const m = await machine(bmc());
			const mac = m.macs[0]!;
			expect((await post(`/machines/${m.id}/provision`, { profile: profileId })).status).toBe(202);
			await machineGet(`/boot?mac=${mac}`);
			const failed = await eventually(
				async () => {
					const r = await row(m.id);
					return r.status === "failed" ? r : undefined;
				},
				(TIMEOUT_S + 30) * 1000,
				"the machine failed at its deadline",
			);
			expect(failed.statusReason).toContain(`provisioning timed out: not registered ${TIMEOUT_S} s after it began; last step seen: script from ${mac}`);
			expect(failed.provisionDeadline).toBeNull();
			await put(`/machines/${m.id}/power`, { action: "off" });
		}, 120_000);

		it("fails at its start a machine that a stopped machines service left provisioning past its deadline", async () => {
			const m = await machine(bmc());
			const broker = provisioner.broker;
			const service = broker.getLocalService("machines") as unknown as { adapter: { model: { update(values: object, options: object): Promise<unknown> } } };
			const model = service.adapter.model;
			await broker.destroyService(service as never);
			// What a process stopped mid-provisioning leaves: the row, its deadline, and no timer anywhere.
			await model.update({ status: "provisioning", statusReason: "power-cycled through BMC (the process stopped here)", provisionStartedAt: new Date(Date.now() - 60_000), provisionDeadline: new Date(Date.now() - 1000) }, { where: { id: m.id } });
			broker.createService(MachinesService);
			await broker.waitForServices(["machines"], 20_000);
			const failed = await eventually(
				async () => {
					const r = await row(m.id).catch(() => null);
					return r?.status === "failed" ? r : undefined;
				},
				20_000,
				"the overdue machine failed after the restart",
			);
			expect(failed.statusReason).toContain("provisioning timed out");
			expect(failed.statusReason).toContain("the process stopped here");
		}, 60_000);

		it("provisions several machines at once, at most MACHINES_PROVISION_CONCURRENCY at a time, with each machine's outcome", async () => {
			const many = [await machine(bmc()), await machine(bmc()), await machine(bmc())];
			const bare = await machine({});
			const ids = [...many.map((m) => m.id), bare.id, 999_999];
			const answer = await json(await post("/machines/provision", { ids, profile: profileId }));
			expect(answer.status).toBe(200);
			expect(answer.body.concurrency).toBe(CONCURRENCY);
			const results = answer.body.results as { id: number; status: number; machine?: { status: string }; error?: { message: string; data: Problem[] }; startedAt: string; finishedAt: string }[];
			expect(results.map((r) => [r.id, r.status])).toEqual([...many.map((m) => [m.id, 202]), [bare.id, 422], [999_999, 404]]);
			for (const r of results.slice(0, 3)) expect(r.machine?.status).toBe("provisioning");
			expect(results[3]!.error!.data.map((p) => p.field)).toEqual(["bmc"]);
			// At no moment were more than CONCURRENCY machines between their first and last BMC call.
			for (const r of results) {
				const at = Date.parse(r.startedAt);
				const running = results.filter((o) => Date.parse(o.startedAt) <= at && at < Date.parse(o.finishedAt)).length;
				expect(running).toBeLessThanOrEqual(CONCURRENCY);
			}
			const tooMany = await json(await post("/machines/provision", { ids: Array.from({ length: 101 }, (_, i) => i + 1) }));
			expect(tooMany.status).toBe(422);
			expect(fieldsOf(tooMany.body)).toEqual(["ids"]);
			await put(`/machines/${many[0]!.id}/power`, { action: "off" });
		}, 180_000);
	});
});
