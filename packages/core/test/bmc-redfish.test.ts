import https from "node:https";
import { BmcError, createBmc, type BmcFields } from "@clusterplatform/core";
import { freePort } from "@clusterplatform/test-kit/ports";
import { OTHER_HOST, startRedfishStandIn, startSilentServer, type RedfishStandIn, type StandInOptions } from "@clusterplatform/test-kit/redfish-server";
import { rejectionOf } from "@clusterplatform/test-kit/rejection";
import { describeIf, missingProgram } from "@clusterplatform/test-kit/requirements";

const failure = (promise: Promise<unknown>) => rejectionOf(promise, BmcError);

function fieldsOf(server: RedfishStandIn): BmcFields {
	return { protocol: "redfish", address: server.address, port: server.port, user: server.user, password: server.password, certificateSha256: server.certificateSha256 };
}

/** A request of the test's own to the stand-in, trusting its certificate as a CA. */
function direct(server: RedfishStandIn, method: string, path: string, headers: Record<string, string> = {}, body?: unknown): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
	return new Promise((resolve, reject) => {
		const payload = body === undefined ? undefined : JSON.stringify(body);
		const req = https.request({ host: server.address, port: server.port, path, method, ca: server.certificatePem, headers: { ...(payload ? { "content-type": "application/json" } : {}), ...headers }, timeout: 10_000 }, (res) => {
			let text = "";
			res.on("data", (chunk) => (text += chunk));
			res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
		});
		req.on("error", reject);
		req.end(payload);
	});
}

describeIf(missingProgram(["openssl"]), "Redfish client against a STAND-IN Redfish server (a test server speaking the DMTF schema for the calls used; not a BMC)", () => {
	const servers: RedfishStandIn[] = [];
	async function standIn(options: StandInOptions = {}): Promise<RedfishStandIn> {
		const server = await startRedfishStandIn(options);
		servers.push(server);
		return server;
	}

	afterAll(async () => {
		await Promise.all(servers.map((server) => server.stop()));
	});

	it("powers on, cycles (ForceRestart) and off through ComputerSystem.Reset, each call in a session it deletes", async () => {
		const server = await standIn();
		const bmc = createBmc(fieldsOf(server));
		expect(await bmc.power("status")).toBe("off");
		expect(await bmc.power("on")).toBe("on");
		expect(server.state.powerState).toBe("On");
		expect(await bmc.power("cycle")).toBe("on");
		expect(await bmc.power("off")).toBe("off");
		expect(server.state.powerState).toBe("Off");
		// A cycle of a system that is off starts it (a restart would be refused: 409).
		expect(await bmc.power("cycle")).toBe("on");
		expect(server.state.resets).toEqual(["On", "ForceRestart", "ForceOff", "On"]);
		expect(server.state.sessionsCreated).toBe(5);
		expect(server.state.sessionsDeleted).toBe(5);
		expect(server.state.activeSessions.size).toBe(0);
		// Every call followed the stand-in's same-host redirect of /redfish/v1/Systems.
		expect(server.state.redirectsServed).toBeGreaterThanOrEqual(5);
	});

	it("chooses the ResetType among the system's AllowableValues", async () => {
		const server = await standIn({ resetTypes: ["ForceOn", "ForceOff", "PowerCycle"], powerState: "On" });
		const bmc = createBmc(fieldsOf(server));
		expect(await bmc.power("cycle")).toBe("on");
		expect(await bmc.power("off")).toBe("off");
		expect(await bmc.power("on")).toBe("on");
		expect(server.state.resets).toEqual(["PowerCycle", "ForceOff", "ForceOn"]);
	});

	it("says so when the system offers no way to power off, without sending a reset", async () => {
		const server = await standIn({ resetTypes: ["On", "GracefulShutdown"], powerState: "On" });
		const err = await failure(createBmc(fieldsOf(server)).power("off"));
		expect(err.reason).toBe("unexpected");
		expect(err.message).toContain(`redfish 127.0.0.1:${server.port}`);
		expect(err.message).toContain("On, GracefulShutdown");
		expect(server.state.resets).toEqual([]);
		expect(server.state.activeSessions.size).toBe(0);
	});

	it("bounds what a BMC's own text adds to an error (no control characters, at most 100 characters of it)", async () => {
		const hostile = Array.from({ length: 50 }, (_, i) => `Reset${i}-${"x".repeat(40)}\r\nInjected: log line`);
		const server = await standIn({ resetTypes: ["On", ...hostile], bootTargets: ["None", ...hostile], powerState: "On" });
		const bmc = createBmc(fieldsOf(server));
		for (const err of [await failure(bmc.power("off")), await failure(bmc.bootDevice("pxe", false))]) {
			expect(err.message).not.toMatch(/[\u0000-\u001f]/);
			expect(err.message).toContain("Reset0-");
			// The label and the driver's own words, plus at most 100 characters the BMC chose.
			expect(err.message.length).toBeLessThan(300);
		}
	});

	it("sets the boot override: Pxe once, Hdd continuous, Cd once", async () => {
		const server = await standIn();
		const bmc = createBmc(fieldsOf(server));
		await bmc.bootDevice("pxe", false);
		expect(server.state.boot).toEqual({ BootSourceOverrideTarget: "Pxe", BootSourceOverrideEnabled: "Once" });
		await bmc.bootDevice("disk", true);
		expect(server.state.boot).toEqual({ BootSourceOverrideTarget: "Hdd", BootSourceOverrideEnabled: "Continuous" });
		await bmc.bootDevice("cdrom", false);
		expect(server.state.boot).toEqual({ BootSourceOverrideTarget: "Cd", BootSourceOverrideEnabled: "Once" });
		expect(server.state.sessionsDeleted).toBe(3);
	});

	it("refuses a boot device the system does not list, without writing, and still deletes its session", async () => {
		const server = await standIn({ bootTargets: ["None", "Hdd"] });
		const err = await failure(createBmc(fieldsOf(server)).bootDevice("pxe", false));
		expect(err.reason).toBe("boot-device-refused");
		expect(err.message).toContain(`redfish 127.0.0.1:${server.port}`);
		expect(err.message).toContain("None, Hdd");
		expect(server.state.patches).toEqual([]);
		expect(server.state.sessionsCreated).toBe(1);
		expect(server.state.activeSessions.size).toBe(0);
	});

	it("writes with If-Match of the ETag it read, and on a 412 (someone wrote in between) reads again and retries once", async () => {
		const server = await standIn();
		// The stand-in enforces ETags: no If-Match is 428, a stale one 412.
		const login = await direct(server, "POST", "/redfish/v1/SessionService/Sessions", {}, { UserName: server.user, Password: server.password });
		const token = String(login.headers["x-auth-token"]);
		const patch = { Boot: { BootSourceOverrideTarget: "Pxe" } };
		expect((await direct(server, "PATCH", "/redfish/v1/Systems/1", { "x-auth-token": token }, patch)).status).toBe(428);
		expect((await direct(server, "PATCH", "/redfish/v1/Systems/1", { "x-auth-token": token, "if-match": 'W/"0"' }, patch)).status).toBe(412);
		await direct(server, "DELETE", String(login.headers.location), { "x-auth-token": token });
		server.state.patches.length = 0;

		const bmc = createBmc(fieldsOf(server));
		await bmc.bootDevice("pxe", false);
		expect(server.state.patches).toEqual([{ ifMatch: server.state.patches[0]!.current, current: server.state.patches[0]!.current, status: 204 }]);

		server.interveneBeforeNextPatch();
		await bmc.bootDevice("disk", false);
		const [stale, fresh] = server.state.patches.slice(1);
		expect(stale).toMatchObject({ status: 412 });
		expect(stale!.ifMatch).not.toBe(stale!.current);
		expect(fresh).toMatchObject({ status: 204 });
		expect(fresh!.ifMatch).toBe(fresh!.current);
		expect(server.state.boot.BootSourceOverrideTarget).toBe("Hdd");
	});

	it("reports refused credentials as an authentication BmcError, without the password", async () => {
		const server = await standIn();
		const wrong = "wrong-password-123";
		const err = await failure(createBmc({ ...fieldsOf(server), password: wrong }).power("status"));
		expect(err.reason).toBe("auth");
		expect(err.message).toContain(`redfish 127.0.0.1:${server.port}`);
		expect(JSON.stringify({ message: err.message, data: err.data })).not.toContain(wrong);
		expect(server.state.sessionsCreated).toBe(0);
	});

	describe("certificates", () => {
		it("accepts the pinned certificate in any spelling (colons or not, any case)", async () => {
			const server = await standIn();
			const bare = server.certificateSha256.replace(/:/g, "").toLowerCase();
			expect(await createBmc({ ...fieldsOf(server), certificateSha256: bare }).power("status")).toBe("off");
		});

		it("refuses a certificate that does not match the pin before sending anything", async () => {
			const server = await standIn();
			const otherPin = "AB:".repeat(31) + "AB";
			const err = await failure(createBmc({ ...fieldsOf(server), certificateSha256: otherPin }).power("status"));
			expect(err.reason).toBe("certificate");
			expect(err.message).toContain(`redfish 127.0.0.1:${server.port}`);
			expect(err.message).toContain(server.certificateSha256);
			expect(server.state.requests).toEqual([]);
		});

		it("without a pin, refuses a self-signed certificate and says its fingerprint (as openssl computes it) for the operator to pin", async () => {
			const server = await standIn();
			const err = await failure(createBmc({ ...fieldsOf(server), certificateSha256: undefined }).power("status"));
			expect(err.reason).toBe("certificate");
			expect(err.data).toMatchObject({ seenCertificateSha256: server.certificateSha256 });
			expect(server.state.requests).toEqual([]);
		});

		it("refuses a pin that is not a SHA-256 fingerprint (422 naming the field)", () => {
			expect(() => createBmc({ protocol: "redfish", address: "127.0.0.1", port: 443, user: "u", password: "p", certificateSha256: "abc" })).toThrow(/bmc\.certificateSha256/);
		});
	});

	it("follows a redirect on the same BMC but refuses one to another host, contacting nothing there", async () => {
		const server = await standIn({ redirectSystems: "other-host" });
		const err = await failure(createBmc(fieldsOf(server)).power("status"));
		expect(err.reason).toBe("unexpected");
		expect(err.message).toContain(OTHER_HOST);
		expect(err.message).toContain("refused");
		// The redirect was the last thing the stand-in saw before the logout.
		expect(server.state.requests.map((r) => `${r.method} ${r.path} ${r.status}`).slice(-2)).toEqual(["GET /redfish/v1/Systems 308", "DELETE /redfish/v1/SessionService/Sessions/1 204"]);
	});

	it("ends a call to a server that accepts and never answers with a timeout BmcError naming it", async () => {
		const silent = await startSilentServer();
		try {
			const started = Date.now();
			const err = await failure(createBmc({ protocol: "redfish", address: "127.0.0.1", port: silent.port, user: "u", password: "p", certificateSha256: "00".repeat(32) }, { timeoutMs: 1_500 }).power("status"));
			expect(err.reason).toBe("timeout");
			expect(err.message).toContain(`redfish 127.0.0.1:${silent.port}`);
			expect(silent.connections()).toBeGreaterThanOrEqual(1);
			// A generous bound (the machine is shared): the point is that it ends.
			expect(Date.now() - started).toBeLessThan(20_000);
		} finally {
			await silent.stop();
		}
	});

	it("reports a port where nothing listens as unreachable", async () => {
		const port = await freePort();
		const err = await failure(createBmc({ protocol: "redfish", address: "127.0.0.1", port, user: "u", password: "p" }).power("status"));
		expect(err.reason).toBe("unreachable");
		expect(err.message).toContain(`redfish 127.0.0.1:${port}`);
	});
});
