import dgram from "node:dgram";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import { createBroker, loadConfig } from "@clusterplatform/core";
import { DistributorWorkerService, DistributorsService } from "@clusterplatform/distributor";
import { freeUdpPort, isRunning, startIpmiSim, type IpmiSim } from "@clusterplatform/test-kit/ipmi-sim";
import { eventually } from "@clusterplatform/test-kit/ports";
import { describeIf, missingProgram } from "@clusterplatform/test-kit/requirements";

/**
 * BMC calls from the site's distributor: the manager ("distributors") and a distributor worker on
 * in-process brokers joined by Moleculer's in-process transporter (serialised like NATS), and a real
 * BMC — OpenIPMI's ipmi_sim on 127.0.0.1 holding a QEMU guest's power. Both brokers log at debug
 * level to files, which are searched for the password at the end.
 */

const SITE = "bmc.sites.example";

/** The error a promise rejects with (a test fails if it resolves). */
async function failure(promise: Promise<unknown>): Promise<Error & { code?: number; type?: string; data?: unknown }> {
	const outcome = await promise.then(
		() => new Error("resolved, but an error was expected"),
		(err: unknown) => err as Error,
	);
	if (outcome.message === "resolved, but an error was expected") throw outcome;
	return outcome;
}

describeIf(missingProgram(["dnsmasq", "ipmi_sim", "ipmitool", "qemu-system-x86_64"]), "BMC calls carried out by the site's distributor", () => {
	const namespace = `distributor-bmc-${process.pid}`;
	const dirs: string[] = [];
	const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-bmc-logs-"));
	let manager: ServiceBroker;
	let site: ServiceBroker;
	let sim: IpmiSim;
	let silent: dgram.Socket;
	let silentPort: number;

	const tempDir = (name: string) => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cpp-bmc-${name}-`));
		dirs.push(dir);
		return dir;
	};
	// Everything either broker logs, down to debug, goes to a file in logDir.
	const fileLogger = (name: string) => ({ type: "File", options: { level: "debug", folder: logDir, filename: `${name}.log`, interval: 0 } });
	const ipmi = () => ({ protocol: "ipmi", address: sim.address, port: sim.port, user: sim.user, password: sim.password, cipherSuite: 3 });
	const bmc = <T = Record<string, unknown>>(params: object) => manager.call<T, object>("distributors.bmc", params);

	beforeAll(async () => {
		sim = await startIpmiSim({ port: await freeUdpPort(), qemuArgs: ["-machine", "accel=kvm:tcg"] });
		// A BMC address that takes datagrams and never answers.
		silent = dgram.createSocket("udp4");
		await new Promise<void>((resolve) => silent.bind(0, "127.0.0.1", () => resolve()));
		silentPort = silent.address().port;

		manager = createBroker(loadConfig({ DATA_DIR: tempDir("manager"), LOG_LEVEL: "debug", NODE_ID: "manager" }), { logger: fileLogger("manager"), transporter: "Fake", namespace });
		manager.createService(DistributorsService);
		await manager.start();
		const siteConfig = loadConfig({ DATA_DIR: tempDir("site"), LOG_LEVEL: "debug", CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, NODE_ID: "bmc-site", CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT: "0" });
		site = createBroker(siteConfig, { logger: fileLogger("site"), transporter: "Fake", namespace });
		site.createService(DistributorWorkerService);
		await site.start();
		await eventually(() => manager.call<{ nodeID: string }, object>("distributors.siteNode", { artifactId: SITE }).catch(() => undefined), 15_000, "the site's distributor online");
	}, 90_000);

	afterAll(async () => {
		await site?.stop();
		await manager?.stop();
		await sim?.stop();
		silent?.close();
		for (const dir of [...dirs, logDir]) fs.rmSync(dir, { recursive: true, force: true });
	}, 60_000);

	it("powers the guest on, reads its status and powers it off through distributors.bmc: the QEMU process starts and ends", async () => {
		expect(await bmc({ artifactId: SITE, ...ipmi(), action: "status" })).toEqual({ bmc: `ipmi 127.0.0.1:${sim.port}`, power: "off" });
		expect(sim.qemuPid()).toBeNull();

		expect(await bmc({ artifactId: SITE, ...ipmi(), action: "on" })).toMatchObject({ power: "on" });
		const pid = await eventually(() => sim.qemuPid() ?? undefined, 15_000, "QEMU started by power on");
		expect(await bmc({ artifactId: SITE, ...ipmi(), action: "status" })).toMatchObject({ power: "on" });

		expect(await bmc({ artifactId: SITE, ...ipmi(), action: "off" })).toMatchObject({ power: "off" });
		await eventually(() => !isRunning(pid) || undefined, 20_000, "QEMU ended by power off");
		expect(sim.qemuPid()).toBeNull();
	}, 120_000);

	it("reports the simulator's refusal of a boot device as a 502 naming the BMC and the device", async () => {
		const err = await failure(bmc({ artifactId: SITE, ...ipmi(), action: "bootdev", device: "pxe", persistent: true }));
		expect(err).toMatchObject({ name: "MoleculerClientError", code: 502, type: "BMC_BOOT_DEVICE_REFUSED", data: { bmc: `ipmi 127.0.0.1:${sim.port}`, reason: "boot-device-refused", device: "pxe" } });
	}, 60_000);

	it("answers 503 for a site whose distributor is not online, before contacting anything", async () => {
		const err = await failure(bmc({ artifactId: "nobody.sites.example", ...ipmi(), action: "status" }));
		expect(err).toMatchObject({ code: 503, message: 'no distributor for site "nobody.sites.example" is online' });
	});

	it("bounds a call to a BMC that never answers: a 502 naming protocol and address, without the password", async () => {
		const password = "silent-secret-1";
		const err = await failure(bmc({ artifactId: SITE, protocol: "ipmi", address: "127.0.0.1", port: silentPort, user: "admin", password, cipherSuite: 3, action: "on", timeoutMs: 3000 }));
		expect(err).toMatchObject({ name: "MoleculerClientError", code: 502, type: "BMC_TIMEOUT", data: { bmc: `ipmi 127.0.0.1:${silentPort}`, reason: "timeout" } });
		expect(err.message).toContain(`BMC ipmi 127.0.0.1:${silentPort} did not answer in time`);
		expect(JSON.stringify({ message: err.message, data: err.data })).not.toContain(password);
	}, 60_000);

	it("refuses wrong credentials and bad params by name, never echoing the password", async () => {
		const wrong = "wrong-secret-22";
		const auth = await failure(bmc({ artifactId: SITE, ...ipmi(), password: wrong, action: "status" }));
		expect(auth).toMatchObject({ code: 502, type: "BMC_AUTH", data: { reason: "auth" } });
		expect(JSON.stringify({ message: auth.message, data: auth.data })).not.toContain(wrong);

		const control = "bad\u0001secret";
		const invalid = await failure(bmc({ artifactId: SITE, ...ipmi(), password: control, action: "status" }));
		expect(invalid).toMatchObject({ code: 422, data: [expect.objectContaining({ field: "bmc.password", message: "must not contain control characters" })] });
		expect(JSON.stringify({ message: invalid.message, data: invalid.data })).not.toContain("secret");

		await expect(bmc({ artifactId: SITE, ...ipmi(), action: "bootdev" })).rejects.toMatchObject({ code: 422, data: [expect.objectContaining({ field: "device" })] });
		await expect(bmc({ artifactId: SITE, ...ipmi(), action: "reboot" })).rejects.toMatchObject({ code: 422, data: [expect.objectContaining({ field: "action" })] });
		await expect(bmc({ artifactId: SITE, ...ipmi(), action: "status", shell: "x" })).rejects.toMatchObject({ code: 422, data: [expect.objectContaining({ field: "shell" })] });
	}, 60_000);

	it("logged the BMC calls by protocol and address on the site, and no password anywhere", async () => {
		const marker = `end-of-test-${process.pid}`;
		manager.logger.info(marker);
		site.logger.info(marker);
		const logs = await eventually(() => {
			const texts = fs.readdirSync(logDir).map((file) => fs.readFileSync(path.join(logDir, file), "utf8"));
			return texts.length === 2 && texts.every((text) => text.includes(marker)) ? texts.join("\n") : undefined;
		}, 10_000, "both log files flushed");
		expect(logs).toContain(`ipmi 127.0.0.1:${sim.port}: power on → on`);
		expect(logs).toContain(`BMC ipmi 127.0.0.1:${silentPort} did not answer in time`);
		for (const password of [sim.password, "silent-secret-1", "wrong-secret-22", "bad\u0001secret"]) expect(logs).not.toContain(password);
	});
});
