import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { macSequence } from "./macs";

/*
 * /api/boot answered from the gateway's memory (packages/gateway/src/machine-cache.ts): repeats of a
 * ready machine's boot, and every change to a machine, profile or selector seen by the very next boot.
 */

const SERVICES = ["gateway", "machines", "profiles", "selectors", "boots"];

const nextMac = macSequence("bb");

const waitFor = <T>(probe: () => Promise<T | null | undefined>, what: string, timeoutMs = 10_000) => eventually(async () => (await probe()) ?? undefined, timeoutMs, what);

describe.each(DATABASES)("boot answers repeated from memory on %s", (database) => {
	let provisioner: TestProvisioner;
	const send = async (method: string, path: string, body?: unknown) => {
		const res = await provisioner.api(path, { method, json: body });
		return { status: res.status, body: await res.json() };
	};
	/** What iPXE asks: the full chain line's query, as every boot of the machine sends it. */
	const boot = async (mac: string) => {
		const res = await fetch(`${provisioner.baseUrl}/api/boot?mac=${mac}&uuid=&serial=SN%201&manufacturer=QEMU&product=Standard%20PC&arch=x86_64&platform=efi`);
		expect(res.status).toBe(200);
		return res.text();
	};
	const eventsOf = async (mac: string): Promise<{ detail: string }[]> => (await (await provisioner.api(`/boots/hosts/${mac}`)).json()).events ?? [];

	/** A ready machine (its boots move no status) that told everything iPXE tells already, and a selector for it. */
	const readyMachine = async (label: string) => {
		const mac = nextMac();
		const created = await send("POST", "/machines", { name: `r-${mac.replace(/:/g, "")}`, macs: [mac], status: "ready", hostname: "first.lan.example", serial: "SN-1", manufacturer: "QEMU", product: "Standard-PC", arch: "x86_64", firmware: "uefi", labels: { storm: label } });
		expect(created.status).toBe(201);
		return { mac, id: created.body.id as number };
	};

	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: SERVICES });
	});
	afterAll(() => provisioner?.stop());

	it("repeats a ready machine's script, on the timeline, until a machine, profile or selector changes", async () => {
		const label = `a-${database}`;
		const profile = await send("POST", "/profiles", { name: `storm-${label}`, ipxeScript: "#!ipxe\necho {{hostname}} {{greeting}}\nexit", variables: { greeting: "one" } });
		expect(profile.status).toBe(201);
		const selector = await send("POST", "/selectors", { name: `storm-${label}`, profileId: profile.body.id, labels: { storm: label } });
		expect(selector.status).toBe(201);
		const { mac, id } = await readyMachine(label);

		expect(await boot(mac)).toBe("#!ipxe\necho first.lan.example one\nexit");
		expect(await boot(mac)).toBe("#!ipxe\necho first.lan.example one\nexit");
		// The repeat left its step, as the gateway records it (so it was answered from memory).
		await waitFor(async () => (await eventsOf(mac)).some((e) => e.detail.includes("repeated by the gateway")), "the repeated boot's event");

		// The profile changes: the next boot gets the new script.
		expect((await send("PUT", `/profiles/${profile.body.id}`, { variables: { greeting: "two" } })).status).toBe(200);
		expect(await boot(mac)).toBe("#!ipxe\necho first.lan.example two\nexit");
		expect(await boot(mac)).toBe("#!ipxe\necho first.lan.example two\nexit");

		// The machine changes.
		expect((await send("PUT", `/machines/${id}`, { hostname: "second.lan.example" })).status).toBe(200);
		expect(await boot(mac)).toBe("#!ipxe\necho second.lan.example two\nexit");

		// A more specific selector (by MAC) takes it to another profile; removed, the first one again.
		const other = await send("POST", "/profiles", { name: `other-${label}`, ipxeScript: "#!ipxe\necho other\nexit" });
		const byMac = await send("POST", "/selectors", { name: `mac-${label}`, profileId: other.body.id, mac });
		expect(byMac.status).toBe(201);
		expect(await boot(mac)).toBe("#!ipxe\necho other\nexit");
		expect((await send("DELETE", `/selectors/${byMac.body.id}`)).status).toBe(200);
		expect(await boot(mac)).toBe("#!ipxe\necho second.lan.example two\nexit");

		// No selector left: the default (local disk) — and a new selector is seen at once.
		expect((await send("DELETE", `/selectors/${selector.body.id}`)).status).toBe(200);
		expect(await boot(mac)).toMatch(/\nexit\n$/);
		expect(await boot(mac)).not.toContain("second.lan.example");
		expect((await send("POST", "/selectors", { name: `again-${label}`, profileId: other.body.id, labels: { storm: label } })).status).toBe(201);
		expect(await boot(mac)).toBe("#!ipxe\necho other\nexit");

		// Provisioning is not repeated: each boot goes to the machines service, which follows it on the status.
		expect((await send("PUT", `/machines/${id}`, { status: "unknown" })).status).toBe(200);
		expect(await boot(mac)).toBe("#!ipxe\necho other\nexit");
		const moved = await send("GET", `/machines/${id}`);
		expect(moved.body).toMatchObject({ status: "provisioning", statusReason: expect.stringContaining("fetched its iPXE script") });
	});

	it("never hides a machine added after its MAC booted unknown, and never repeats a post-boot script", async () => {
		const label = `b-${database}`;
		const mac = nextMac();
		const unknown = await boot(mac);
		expect(unknown).toMatch(/\nexit\n$/);
		const [discovered] = (await send("GET", `/machines?mac=${mac}`)).body.rows;
		expect(discovered).toMatchObject({ status: "discovered" });
		const profile = await send("POST", "/profiles", { name: `adopt-${label}`, ipxeScript: "#!ipxe\necho adopted {{name}}\nexit", postbootScript: "#!/bin/sh\necho {{registrationToken}}" });
		expect((await send("POST", "/selectors", { name: `adopt-${label}`, profileId: profile.body.id, mac })).status).toBe(201);
		// Still discovered (not adopted): the default again; adopted as ready, its script at once.
		expect(await boot(mac)).toMatch(/discovered, not adopted.*\nexit\n$/);
		expect((await send("PUT", `/machines/${discovered.id}`, { status: "ready" })).status).toBe(200);
		expect(await boot(mac)).toBe(`#!ipxe\necho adopted ${discovered.name}\nexit`);
		expect(await boot(mac)).toBe(`#!ipxe\necho adopted ${discovered.name}\nexit`);

		const postboot = async () => (await fetch(`${provisioner.baseUrl}/api/boot/${mac}/postboot`)).text();
		// A ready machine's post-boot script carries no token (409, saying why); a provisioning one's a new one each time.
		const ready = await fetch(`${provisioner.baseUrl}/api/boot/${mac}/postboot`);
		expect(ready.status).toBe(409);
		expect(await ready.text()).not.toMatch(/cpm_/);
		expect((await send("PUT", `/machines/${discovered.id}`, { status: "unknown" })).status).toBe(200);
		expect(await boot(mac)).toBe(`#!ipxe\necho adopted ${discovered.name}\nexit`);
		const [first, second] = [await postboot(), await postboot()];
		expect(first).toMatch(/cpm_/);
		expect(second).toMatch(/cpm_/);
		expect(second).not.toBe(first);

		// A machine removed boots unknown again, recorded anew.
		expect((await send("DELETE", `/machines/${discovered.id}`)).status).toBe(200);
		expect(await boot(mac)).toBe(unknown);
		const [again] = (await send("GET", `/machines?mac=${mac}`)).body.rows;
		expect(again).toMatchObject({ status: "discovered" });
		expect(again.id).not.toBe(discovered.id);
	});

	it("keeps ready machines' answers in memory while unknown MACs are discovered", async () => {
		const label = `d-${database}`;
		const profile = await send("POST", "/profiles", { name: `keep-${label}`, ipxeScript: "#!ipxe\necho kept\nexit" });
		expect((await send("POST", "/selectors", { name: `keep-${label}`, profileId: profile.body.id, labels: { storm: label } })).status).toBe(201);
		const { mac } = await readyMachine(label);
		// What the gateway holds for /api/boot answers (its boot entries are emptied on any machines cache.clean).
		const cached = () => (provisioner.broker.getLocalService("gateway") as unknown as { machineCache: { size: { entries: number } } }).machineCache.size.entries;
		expect(await boot(mac)).toBe("#!ipxe\necho kept\nexit");
		const held = cached();
		expect(held).toBeGreaterThan(0);
		// A discovery (and a discovered machine's refresh) changes no ready machine's answer: nothing is emptied.
		const stranger = nextMac();
		await boot(stranger);
		await boot(stranger);
		expect((await send("GET", `/machines?mac=${stranger}`)).body.rows[0]).toMatchObject({ status: "discovered" });
		expect(cached()).toBe(held);
		expect(await boot(mac)).toBe("#!ipxe\necho kept\nexit");
	});

	it("writes the lastSeen of repeated boots in one call (bootsSeen), ignoring MACs it does not know", async () => {
		const { mac, id } = await readyMachine(`c-${database}`);
		expect((await send("GET", `/machines/${id}`)).body.lastSeen).toBeNull();
		const updated = await provisioner.broker.call("machines.bootsSeen", { macs: [mac.toUpperCase(), nextMac(), "not a mac"] });
		expect(updated).toBe(1);
		expect((await send("GET", `/machines/${id}`)).body.lastSeen).toEqual(expect.any(String));
	});
});
