import dgram from "node:dgram";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BmcError, createBmc, type BmcFields } from "@clusterplatform/core";
import { commandLine, freeUdpPort, isRunning, startIpmiSim, type IpmiSim } from "@clusterplatform/test-kit/ipmi-sim";
import { eventually } from "@clusterplatform/test-kit/ports";
import { rejectionOf } from "@clusterplatform/test-kit/rejection";
import { describeIf, missingProgram } from "@clusterplatform/test-kit/requirements";

const failure = (promise: Promise<unknown>) => rejectionOf(promise, BmcError);

/** ipmitool processes whose command line names this port (the library's, while a call is pending). */
function ipmitoolProcessesFor(port: number): string[][] {
	return fs
		.readdirSync("/proc")
		.filter((entry) => /^\d+$/.test(entry))
		.map((pid) => commandLine(Number(pid)))
		.filter((argv) => argv[0] !== undefined && path.basename(argv[0]) === "ipmitool" && argv.includes(String(port)));
}

describeIf(missingProgram(["ipmi_sim", "ipmitool", "qemu-system-x86_64"]), "IPMI over LAN against OpenIPMI's BMC simulator holding a QEMU guest's power", () => {
	let sim: IpmiSim;
	let fields: BmcFields;
	// RMCP+ cipher suite 3 spares each call ipmitool's cipher discovery, which the simulator does not answer.
	const options = { cipherSuite: 3 };

	beforeAll(async () => {
		sim = await startIpmiSim({ port: await freeUdpPort(), qemuArgs: ["-machine", "accel=kvm:tcg"] });
		fields = { protocol: "ipmi", address: sim.address, port: sim.port, user: sim.user, password: sim.password };
	}, 60_000);

	afterAll(async () => {
		await sim?.stop();
	}, 30_000);

	it("powers the guest on, cycles and off: the QEMU process starts, is replaced and ends", async () => {
		const bmc = createBmc(fields, options);
		expect(await bmc.power("status")).toBe("off");
		expect(sim.qemuPid()).toBeNull();

		expect(await bmc.power("on")).toBe("on");
		const first = await eventually(() => sim.qemuPid() ?? undefined, 15_000, "QEMU started by power on");
		expect(isRunning(first)).toBe(true);
		expect(await bmc.power("status")).toBe("on");

		expect(await bmc.power("cycle")).toBe("on");
		await eventually(() => !isRunning(first), 20_000, "the first QEMU ended by the cycle");
		const second = await eventually(() => sim.qemuPid() ?? undefined, 20_000, "QEMU started again by the cycle");
		expect(second).not.toBe(first);

		expect(await bmc.power("off")).toBe("off");
		await eventually(() => !isRunning(second), 20_000, "QEMU ended by power off");
		expect(sim.qemuPid()).toBeNull();
		expect(await bmc.power("status")).toBe("off");
	}, 120_000);

	it("starts a guest that is off when asked to cycle it", async () => {
		const bmc = createBmc(fields, options);
		expect(await bmc.power("status")).toBe("off");
		expect(await bmc.power("cycle")).toBe("on");
		const pid = await eventually(() => sim.qemuPid() ?? undefined, 15_000, "QEMU started by the cycle");
		expect(await bmc.power("off")).toBe("off");
		await eventually(() => !isRunning(pid), 20_000, "QEMU ended by power off");
	}, 120_000);

	it("works with the cipher suite ipmitool chooses itself", async () => {
		expect(await createBmc(fields).power("status")).toBe("off");
	}, 60_000);

	it("reports a refused password as an authentication BmcError naming the BMC, without the password", async () => {
		const wrong = "not-the-password";
		const err = await failure(createBmc({ ...fields, password: wrong }, options).power("status"));
		expect(err.reason).toBe("auth");
		expect(err.message).toContain(`ipmi 127.0.0.1:${sim.port}`);
		expect(JSON.stringify({ message: err.message, data: err.data })).not.toContain(wrong);
	}, 60_000);

	it("reports an unknown user as an authentication BmcError", async () => {
		const err = await failure(createBmc({ ...fields, user: "nobody" }, options).power("status"));
		expect(err.reason).toBe("auth");
	}, 60_000);

	it("reports the simulator's refusal of a PXE boot device as a refused-boot-device BmcError", async () => {
		const err = await failure(createBmc(fields, options).bootDevice("pxe", false));
		expect(err.reason).toBe("boot-device-refused");
		expect(err.message).toContain(`ipmi 127.0.0.1:${sim.port}`);
		expect(err.message).toContain("Invalid data field in request");
	}, 60_000);

	describe("a port where nothing answers", () => {
		let silent: dgram.Socket;
		let silentPort: number;

		beforeAll(async () => {
			// Bound and silent: datagrams are taken and never answered (no ICMP refusal to shortcut the wait).
			silent = dgram.createSocket("udp4");
			await new Promise<void>((resolve) => silent.bind(0, "127.0.0.1", resolve));
			silentPort = silent.address().port;
		});

		afterAll(() => new Promise<void>((resolve) => silent.close(() => resolve())));

		it("gives up after ipmitool's retries with a timeout BmcError naming address:port, the password only in ipmitool's environment", async () => {
			const password = `secret-${Math.random().toString(36).slice(2)}`;
			const started = Date.now();
			const pending = failure(createBmc({ ...fields, port: silentPort, password }, options).power("status"));
			const argv = await eventually(() => ipmitoolProcessesFor(silentPort)[0], 10_000, "the ipmitool process of the pending call");
			expect(argv).toContain("-E");
			expect(argv.join(" ")).not.toContain(password);
			const err = await pending;
			expect(err.reason).toBe("timeout");
			expect(err.message).toContain(`ipmi 127.0.0.1:${silentPort}`);
			// A generous bound (the machine is shared): the point is that it ends, not how fast.
			expect(Date.now() - started).toBeLessThan(45_000);
		}, 60_000);

		it("ends the call at the library's own time limit", async () => {
			const started = Date.now();
			const err = await failure(createBmc({ ...fields, port: silentPort }, { ...options, timeoutMs: 1_500 }).power("status"));
			expect(err.reason).toBe("timeout");
			expect(err.message).toContain(`127.0.0.1:${silentPort}`);
			expect(Date.now() - started).toBeLessThan(30_000);
		}, 60_000);
	});

	it("never puts the password on ipmitool's command line (every argv the library runs, recorded)", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ipmitool-argv-"));
		const log = path.join(dir, "argv.log");
		const wrapper = path.join(dir, "ipmitool");
		// Records its own argv as the kernel holds it, and whether the password came in the environment.
		fs.writeFileSync(
			wrapper,
			`#!/bin/sh\ntr '\\000' ' ' < /proc/$$/cmdline >> '${log}'\necho >> '${log}'\n[ -n "$IPMI_PASSWORD" ] && echo "environment: IPMI_PASSWORD set" >> '${log}'\nexec ipmitool "$@"\n`,
			{ mode: 0o700 },
		);
		try {
			const bmc = createBmc(fields, { ...options, ipmitool: wrapper });
			expect(await bmc.power("status")).toBe("off");
			await failure(bmc.bootDevice("pxe", true));
			const recorded = fs.readFileSync(log, "utf8");
			expect(recorded).toContain("chassis power status");
			expect(recorded).toContain("chassis bootdev pxe options=persistent");
			expect(recorded.match(/environment: IPMI_PASSWORD set/g)).toHaveLength(2);
			expect(recorded).toContain(" -E ");
			expect(recorded).not.toContain(sim.password);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	}, 60_000);

	it("refuses bad fields before contacting anything (422 naming the field)", () => {
		expect(() => createBmc({ ...fields, address: "-oProxyCommand=x" })).toThrow(/bmc\.address/);
		expect(() => createBmc({ ...fields, port: 0 })).toThrow(/bmc\.port/);
		expect(() => createBmc({ ...fields, password: "x".repeat(21) })).toThrow(/bmc\.password: must be at most 20 bytes/);
		expect(() => createBmc({ ...fields, user: "a\nb" })).toThrow(/bmc\.user/);
	});
});
