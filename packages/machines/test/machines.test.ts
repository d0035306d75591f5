import { eventually } from "@clusterplatform/test-kit/ports";
import { DATABASES, startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { macSequence } from "./macs";

const SITE = "rack-a.example";
const PASSWORD = "bmc-Secret-4711";
const SERVICES = ["gateway", "machines", "profiles", "selectors", "localnodes", "mainscripts", "boots"];

interface Problem {
	field: string;
	message: string;
}

const nextMac = macSequence("aa");

const waitFor = <T>(probe: () => Promise<T | null | undefined>, what: string, timeoutMs = 10_000) => eventually(async () => (await probe()) ?? undefined, timeoutMs, what);

describe.each(DATABASES)("machines on %s", (database) => {
	let provisioner: TestProvisioner;
	const json = async (res: Response) => ({ status: res.status, body: await res.json() });
	const post = (path: string, body: unknown) => provisioner.api(path, { method: "POST", json: body });
	const put = (path: string, body: unknown) => provisioner.api(path, { method: "PUT", json: body });
	/** What a machine asks without a token: the machine path. */
	const machineGet = (path: string) => fetch(`${provisioner.baseUrl}/api${path}`);
	const fieldsOf = (body: { data?: Problem[] }) => (body.data ?? []).map((p) => p.field);
	/** The field, or a part of it (labels.rack). */
	const names = (body: { data?: Problem[] }, field: string) => fieldsOf(body).some((f) => f === field || f.startsWith(`${field}.`));
	const machineCount = async () => (await (await provisioner.api("/machines?pageSize=1")).json()).total as number;
	const machine = async (fields: Record<string, unknown>) => {
		const res = await json(await post("/machines", { name: `m-${nextMac().replace(/:/g, "")}`, macs: [nextMac()], ...fields }));
		expect(res.status).toBe(201);
		return res.body;
	};
	const profile = async (fields: Record<string, unknown>) => {
		const res = await json(await post("/profiles", { name: `p-${nextMac().replace(/:/g, "")}`, ...fields }));
		expect(res).toMatchObject({ status: 201 });
		return res.body;
	};

	/** The BMC as provisioning hands it to a distributor: the sealed password opened (nothing else shows it). */
	const storedBmc = async (id: number) => {
		const service = provisioner.broker.getLocalService("machines") as unknown as { machine(id: number): Promise<Record<string, unknown>>; sealer(): { open(text: string): string } };
		const row = await service.machine(id);
		return { protocol: row.bmcProtocol, address: row.bmcAddress, port: row.bmcPort ?? (row.bmcProtocol === "redfish" ? 443 : 623), user: row.bmcUser, password: row.bmcPassword ? service.sealer().open(row.bmcPassword as string) : null, cipherSuite: row.bmcProtocol === "ipmi" ? row.bmcCipherSuite : null, certificateSha256: row.bmcProtocol === "redfish" ? row.bmcCertificateSha256 : null };
	};

	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: SERVICES });
	});
	afterAll(() => provisioner?.stop());

	describe("inventory", () => {
		it("keeps a machine with its MACs in one spelling, and its BMC password sealed: never echoed, listed or searchable", async () => {
			const created = await json(
				await post("/machines", {
					name: "web-01",
					macs: ["AA-BB-CC-00-00-01", "aa:bb:cc:00:00:02"],
					uuid: "4C4C4544-0035-5910-8057-B4C04F564433",
					serial: "CZ1234-X",
					arch: "x86_64",
					firmware: "uefi",
					artifactId: SITE,
					labels: { rack: "r1", role: "web" },
					hostname: "web-01.lan.example",
					bmcProtocol: "ipmi",
					bmcAddress: "10.0.9.1",
					bmcUser: "admin",
					bmcPassword: PASSWORD,
				}),
			);
			expect(created.status).toBe(201);
			expect(created.body).toMatchObject({ name: "web-01", macs: ["aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"], uuid: "4c4c4544-0035-5910-8057-b4c04f564433", status: "unknown", labels: { rack: "r1", role: "web" }, localnodeId: null });
			const shown = [JSON.stringify(created.body), await (await provisioner.api(`/machines/${created.body.id}`)).text(), await (await provisioner.api("/machines?pageSize=100")).text()];
			for (const text of shown) {
				expect(text).not.toContain(PASSWORD);
				expect(text).not.toContain("bmcPassword");
				expect(text).not.toContain("registrationTokenSha256");
			}
			for (const query of [`search=${PASSWORD}&searchFields=bmcPassword`, "sort=bmcPassword", "search=a&searchFields=registrationTokenSha256"]) {
				const refused = await json(await provisioner.api(`/machines?${query}`));
				expect(refused.status).toBe(422);
			}
			// An update that leaves the password out keeps it; the row never shows it either way.
			const renamed = await json(await put(`/machines/${created.body.id}`, { hostname: "web-1.lan.example" }));
			expect(renamed.status).toBe(200);
			expect(JSON.stringify(renamed.body)).not.toContain(PASSWORD);
			expect(await storedBmc(created.body.id)).toEqual({ protocol: "ipmi", address: "10.0.9.1", port: 623, user: "admin", password: PASSWORD, cipherSuite: null, certificateSha256: null });
			// No action hands the password out in clear.
			expect(provisioner.broker.registry.getActionEndpoints("machines.bmcCredentials")).toBeFalsy();
			// The BMC's cipher suite (IPMI) and pinned certificate (Redfish) travel with its credentials.
			expect((await put(`/machines/${created.body.id}`, { bmcCipherSuite: 3 })).status).toBe(200);
			expect(await storedBmc(created.body.id)).toMatchObject({ protocol: "ipmi", cipherSuite: 3, certificateSha256: null });
			const pin = "ab".repeat(32);
			expect((await put(`/machines/${created.body.id}`, { bmcProtocol: "redfish", bmcPort: 443, bmcCertificateSha256: pin })).status).toBe(200);
			expect(await storedBmc(created.body.id)).toEqual({ protocol: "redfish", address: "10.0.9.1", port: 443, user: "admin", password: PASSWORD, cipherSuite: null, certificateSha256: pin });
		});

		it("refuses bad fields with 422 naming each, and writes nothing", async () => {
			const before = await machineCount();
			const cases: [Record<string, unknown>, string][] = [
				[{ macs: ["aa:bb:cc:dd:ee"] }, "macs"],
				[{ macs: ["ff:ff:ff:ff:ff:ff"] }, "macs"],
				[{ macs: [] }, "macs"],
				[{ arch: "sparc" }, "arch"],
				[{ firmware: "coreboot" }, "firmware"],
				[{ uuid: "not-a-uuid" }, "uuid"],
				[{ labels: { rack: "r1; reboot" } }, "labels"],
				[{ labels: { "bad key": "x" } }, "labels"],
				[{ labels: { rack: 7 } }, "labels.rack"],
				[{ serial: "$(reboot)" }, "serial"],
				// Nothing a shell or iPXE splits or reads: no spaces, '#', parentheses.
				[{ serial: "x touch /tmp/p" }, "serial"],
				[{ product: "a#b" }, "product"],
				[{ manufacturer: "a(b)" }, "manufacturer"],
				[{ labels: { rack: "r1 init=/bin/sh" } }, "labels"],
				// The drivers' rules, at save time: IPMI's 16-byte user and 20-byte password, no control characters, a resolvable name.
				[{ bmcProtocol: "ipmi", bmcAddress: "10.0.0.1", bmcUser: "u".repeat(17) }, "bmcUser"],
				[{ bmcProtocol: "ipmi", bmcAddress: "10.0.0.1", bmcPassword: "p".repeat(21) }, "bmcPassword"],
				[{ bmcProtocol: "redfish", bmcAddress: "10.0.0.1", bmcPassword: "a\u0001b" }, "bmcPassword"],
				[{ bmcProtocol: "ipmi", bmcAddress: "bmc_1.example" }, "bmcAddress"],
				[{ hostname: "under_score..example" }, "hostname"],
				[{ bmcProtocol: "telnet", bmcAddress: "10.0.0.1" }, "bmcProtocol"],
				[{ bmcProtocol: "ipmi", bmcAddress: "bmc one" }, "bmcAddress"],
				[{ bmcProtocol: "ipmi", bmcAddress: "10.0.0.1", bmcPort: 70000 }, "bmcPort"],
				[{ bmcUser: "admin", bmcAddress: "10.0.0.1" }, "bmcProtocol"],
				[{ bmcProtocol: "redfish" }, "bmcAddress"],
				[{ artifactId: "a site" }, "artifactId"],
				[{ localnodeId: 3 }, "localnodeId"],
			];
			for (const [fields, field] of cases) {
				const res = await json(await post("/machines", { name: `bad-${nextMac().replace(/:/g, "")}`, macs: [nextMac()], ...fields }));
				expect({ fields, status: res.status }).toEqual({ fields, status: 422 });
				expect({ fields, named: names(res.body, field) }).toEqual({ fields, named: true });
			}
			expect(await machineCount()).toBe(before);
		});

		it("refuses a MAC or name another machine has (409), also on update, and frees a MAC an update drops", async () => {
			const mac = nextMac();
			const first = await machine({ macs: [mac] });
			const taken = await json(await post("/machines", { name: "another", macs: [mac.toUpperCase()] }));
			expect(taken.status).toBe(409);
			expect(taken.body.message).toContain(mac);
			expect((await json(await post("/machines", { name: first.name, macs: [nextMac()] }))).status).toBe(409);
			const second = await machine({});
			expect((await json(await put(`/machines/${second.id}`, { macs: [mac] }))).status).toBe(409);
			const freed = nextMac();
			expect((await json(await put(`/machines/${first.id}`, { macs: [freed] }))).body.macs).toEqual([freed]);
			expect((await json(await put(`/machines/${second.id}`, { macs: [mac, second.macs[0]] }))).status).toBe(200);
			expect((await json(await provisioner.api(`/machines?mac=${mac}`))).body.rows.map((r: { id: number }) => r.id)).toEqual([second.id]);
			expect((await provisioner.api(`/machines/${second.id}`, { method: "DELETE" })).status).toBe(200);
			// Its MACs go with it.
			expect((await json(await post("/machines", { name: `again-${second.id}`, macs: [mac] }))).status).toBe(201);
		});

		it("finds machines by MAC, label and site", async () => {
			const site = `search-${database}`;
			const a = await machine({ artifactId: site, labels: { rack: "r7", role: "db" } });
			const b = await machine({ artifactId: site, labels: { rack: "r8" } });
			await machine({ labels: { rack: "r7" } });
			const ids = async (query: string) => (await (await provisioner.api(`/machines?${query}&pageSize=100`)).json()).rows.map((r: { id: number }) => r.id).sort();
			expect(await ids(`mac=${a.macs[0].toUpperCase()}`)).toEqual([a.id]);
			expect(await ids(`artifactId=${site}`)).toEqual([a.id, b.id]);
			expect(await ids(`artifactId=${site}&label=rack=r7`)).toEqual([a.id]);
			expect(await ids("label=role")).toContain(a.id);
			expect(await ids(`label=role=db&artifactId=${site}`)).toEqual([a.id]);
			expect((await provisioner.api("/machines?label=rack=r7' OR 1=1")).status).toBe(422);
		});
	});

	describe("import", () => {
		it("imports JSON all or nothing: one bad row is a 422 naming the row and field", async () => {
			const before = await machineCount();
			const rows = [
				{ name: `imp-a-${database}`, macs: [nextMac()] },
				{ name: `imp-b-${database}`, macs: ["not a mac"] },
				{ name: `imp-c-${database}`, macs: [nextMac()], bmcProtocol: "ipmi", bmcAddress: "bmc-c.lan", bmcPassword: PASSWORD },
			];
			const refused = await json(await post("/machines/import", { machines: rows }));
			expect(refused.status).toBe(422);
			expect(fieldsOf(refused.body)).toEqual(["machines[1].macs"]);
			expect(await machineCount()).toBe(before);
			const duplicate = await json(await post("/machines/import", { machines: [rows[0], { ...rows[2], macs: rows[0]!.macs }] }));
			expect(duplicate.status).toBe(422);
			expect(fieldsOf(duplicate.body)).toEqual(["machines[1].macs"]);
			const created = await json(await post("/machines/import", { machines: [rows[0], rows[2]] }));
			expect(created).toMatchObject({ status: 201, body: { created: 2 } });
			expect(await machineCount()).toBe(before + 2);
			const listed = await (await provisioner.api(`/machines?search=imp-c-${database}&searchFields=name`)).text();
			expect(listed).toContain(`imp-c-${database}`);
			expect(listed).not.toContain(PASSWORD);
		});

		it("imports CSV all or nothing: a MAC already known is a 409 naming the line, nothing is written", async () => {
			const known = await machine({});
			const before = await machineCount();
			const [m1, m2] = [nextMac(), nextMac()];
			const csv = (second: string) =>
				[`name,macs,arch,firmware,artifactId,labels,bmcProtocol,bmcAddress,bmcPort,bmcPassword`, `csv-1-${database},${m1},x86_64,uefi,${SITE},rack=r1;role=web,ipmi,10.0.0.5,6230,${PASSWORD}`, `"csv-2-${database}","${second}",arm64,,,,,,,`].join("\n");
			const conflict = await json(await post("/machines/import", { csv: csv(`${m2} ${known.macs[0]}`) }));
			expect(conflict.status).toBe(409);
			expect(conflict.body.message).toContain("csv line 3");
			expect(await machineCount()).toBe(before);
			const badPort = await json(await post("/machines/import", { csv: csv(m2).replace(",6230,", ",port,") }));
			expect(badPort.status).toBe(422);
			expect(fieldsOf(badPort.body)).toEqual(["csv line 2.bmcPort"]);
			const unknownColumn = await json(await post("/machines/import", { csv: "name,macs,colour\nx,aa:bb:cc:00:99:01,blue" }));
			expect(fieldsOf(unknownColumn.body)).toEqual(["csv"]);
			const created = await json(await post("/machines/import", { csv: csv(m2) }));
			expect(created).toMatchObject({ status: 201, body: { created: 2 } });
			const row = (await (await provisioner.api(`/machines?mac=${m1}`)).json()).rows[0];
			expect(row).toMatchObject({ arch: "x86_64", firmware: "uefi", labels: { rack: "r1", role: "web" }, bmcPort: 6230 });
			expect(JSON.stringify(row)).not.toContain(PASSWORD);
		});
	});

	describe("profiles, selectors and plans", () => {
		it("refuses a template naming what neither a machine nor the profile's variables give (422 at write time)", async () => {
			const refusals: [Record<string, unknown>, string, RegExp][] = [
				[{ ipxeScript: "#!ipxe\nkernel {{kernelUrl}}" }, "ipxeScript", /kernelUrl/],
				[{ ipxeScript: "echo {{name}}" }, "ipxeScript", /#!ipxe/],
				[{ ipxeScript: "#!ipxe\n{{> other}}" }, "ipxeScript", /partial/],
				[{ ipxeScript: "#!ipxe\n{{#name}}" }, "ipxeScript", /not a valid template/],
				[{ ipxeScript: "#!ipxe\nchain {{registerUrl}}" }, "ipxeScript", /post-boot/],
				[{ ipxeScript: "#!ipxe\nchain {{kickstartUrl}}" }, "ipxeScript", /no kickstart/],
				[{ ipxeScript: "#!ipxe\n{{hostname.part}}" }, "ipxeScript", /only labels/],
				[{ ipxeScript: "#!ipxe", kickstart: "network --hostname={{fqdn}}" }, "kickstart", /fqdn/],
				[{ ipxeScript: "#!ipxe", mainscriptId: 1 }, "mainscriptId", /exactly one/],
				[{ kickstart: "text" }, "ipxeScript", /exactly one/],
				[{ ipxeScript: "#!ipxe", variables: { mac: "x" } }, "variables", /machine's own/],
				[{ ipxeScript: "#!ipxe", variables: { "bad-name": "x" } }, "variables", /./],
			];
			for (const [fields, field, reason] of refusals) {
				const res = await json(await post("/profiles", { name: `bad-${nextMac().replace(/:/g, "")}`, ...fields }));
				expect({ fields, status: res.status }).toEqual({ fields, status: 422 });
				expect({ fields, named: names(res.body, field) }).toEqual({ fields, named: true });
				expect(res.body.message).toMatch(reason);
			}
			const fine = await profile({ ipxeScript: "#!ipxe\nkernel {{kernelUrl}} ks={{kickstartUrl}}", kickstart: "network --hostname={{hostname}}", variables: { kernelUrl: "http://mirror/vmlinuz" } });
			// Dropping the variable the template names is refused, and the profile stays as it was.
			const dropped = await json(await put(`/profiles/${fine.id}`, { variables: {} }));
			expect(dropped.status).toBe(422);
			expect(fieldsOf(dropped.body)).toEqual(["ipxeScript"]);
			expect((await (await provisioner.api(`/profiles/${fine.id}`)).json()).variables).toEqual({ kernelUrl: "http://mirror/vmlinuz" });
		});

		it("picks the most specific selector, refuses ties at write time, and explains the plan", async () => {
			const site = `plan-${database}`;
			const generic = await profile({ ipxeScript: "#!ipxe\necho generic {{name}} {{arch}}" });
			const racked = await profile({ ipxeScript: "#!ipxe\necho racked {{labels.rack}} on {{artifactId}}" });
			const single = await profile({ ipxeScript: "#!ipxe\nkernel {{kernel}} mac={{mac}}", variables: { kernel: "http://mirror/linux" } });
			const one = await machine({ artifactId: site, arch: "x86_64", labels: { rack: "r1" } });
			const two = await machine({ artifactId: site, arch: "x86_64", labels: { rack: "r2" } });
			const three = await machine({ artifactId: site, arch: "x86_64", labels: { rack: "r1" } });
			const selector = async (fields: Record<string, unknown>) => json(await post("/selectors", { name: `s-${nextMac().replace(/:/g, "")}`, ...fields }));
			expect((await selector({ profileId: generic.id, artifactId: site })).status).toBe(201);
			// Another selector that could match the same machines with the same rank (site): a tie, refused.
			const tie = await selector({ profileId: racked.id, artifactId: site, arch: undefined });
			expect(tie.status).toBe(409);
			expect((await selector({ profileId: racked.id, artifactId: site, labels: { rack: "r1" } })).status).toBe(201);
			expect((await selector({ profileId: single.id, mac: three.macs[0] })).status).toBe(201);
			// Equal rank, but no machine can match both (racks differ): fine.
			expect((await selector({ profileId: generic.id, artifactId: site, labels: { rack: "r2" } })).status).toBe(201);
			// Equal rank and both could match a rack r1 machine of arch x86_64: refused.
			const rackTie = await selector({ profileId: generic.id, artifactId: site, labels: { role: "db" } });
			expect(rackTie.status).toBe(409);
			expect(rackTie.body.message).toMatch(/identity/);
			// Two MACs of one machine would both match it: a tie too.
			expect((await selector({ profileId: generic.id, mac: three.macs[0] })).status).toBe(409);
			expect((await selector({ profileId: generic.id, profileIdIsMissing: true })).status).toBe(422);
			expect(fieldsOf((await selector({ profileId: 999_999 })).body)).toEqual(["profileId"]);

			const plan = async (id: number) => (await provisioner.api(`/machines/${id}/plan`)).json();
			const first = await plan(one.id);
			expect(first).toMatchObject({ profile: { id: racked.id }, selector: { ranks: [0, 1, 1, 0], matchedOn: [`artifactId ${site}`, "label rack=r1"] }, problems: [] });
			expect(first.scripts.ipxe).toBe(`#!ipxe\necho racked r1 on ${site}`);
			expect(first.why).toMatch(/highest of the 2 selector/);
			const third = await plan(three.id);
			expect(third).toMatchObject({ profile: { id: single.id }, selector: { ranks: [1, 0, 0, 0] } });
			expect(third.scripts.ipxe).toBe(`#!ipxe\nkernel http://mirror/linux mac=${three.macs[0]}`);
			expect((await plan(two.id)).profile.id).toBe(generic.id);
			const elsewhere = await plan((await machine({})).id);
			expect(elsewhere).toMatchObject({ profile: null, selector: null });
			expect(elsewhere.why).toMatch(/no selector matches/);
			expect(elsewhere.scripts.ipxe).toMatch(/^#!ipxe\n.*\nexit\n$/s);
			// A profile in use stays.
			expect((await provisioner.api(`/profiles/${racked.id}`, { method: "DELETE" })).status).toBe(409);
		});
	});

	describe("the machine path", () => {
		it("answers a known machine's rendered script without a token, and follows it on its status", async () => {
			const ks = await profile({
				ipxeScript: "#!ipxe\nkernel {{kernel}} inst.ks={{kickstartUrl}}\nboot",
				kickstart: "network --hostname={{hostname}}\n%post\ncurl -s {{postbootUrl}} | sh\n%end",
				postbootScript: "#!/bin/sh\ncurl -X POST '{{registerUrl}}&ip=$(hostname -I | cut -d\" \" -f1)'",
				variables: { kernel: "http://mirror/vmlinuz" },
			});
			const known = await machine({ artifactId: SITE, hostname: "known.lan.example", labels: { role: `ks-${database}` } });
			expect((await post("/selectors", { name: `ks-${database}`, profileId: ks.id, labels: { role: `ks-${database}` } })).status).toBe(201);
			const mac = known.macs[0];
			const answer = await machineGet(`/boot?mac=${mac}&uuid=2f1b8a8e-5c1e-4d7e-9a4b-0c7d2e3f4a5c&serial=x%20touch%20/tmp/p&manufacturer=QEMU&product=Standard%20PC&arch=x86_64&platform=efi`);
			expect(answer.status).toBe(200);
			expect(answer.headers.get("content-type")).toMatch(/^text\/plain/);
			expect(await answer.text()).toBe(`#!ipxe\nkernel http://mirror/vmlinuz inst.ks=${provisioner.baseUrl}/api/boot/${mac}/kickstart\nboot`);
			const row = await (await provisioner.api(`/machines/${known.id}`)).json();
			// What a boot reports is no proof (anyone may send any MAC): a known machine keeps what the operator set, even where it had nothing.
			expect(row).toMatchObject({ status: "provisioning", uuid: null, serial: null, manufacturer: null, product: null, arch: null, firmware: null, lastSeen: expect.any(String) });
			const kickstart = await machineGet(`/boot/${mac}/kickstart`);
			expect(await kickstart.text()).toContain("network --hostname=known.lan.example");
			for (const bad of ["/boot?mac=zz", "/boot?mac=", `/boot?mac=${mac}&arch=x86;64`, `/boot?mac=${mac}&colour=blue`]) {
				const refused = await machineGet(bad);
				expect({ bad, status: refused.status }).toEqual({ bad, status: 422 });
			}
			expect(fieldsOf(await (await machineGet("/boot?mac=")).json())).toEqual(["mac"]);
			// Without a MAC: the chain line itself, for an embedded script or a mainscript to chain.
			const chain = await (await machineGet("/boot")).text();
			expect(chain).toBe(`#!ipxe\nchain ${provisioner.baseUrl}/api/boot?mac=\${net0/mac}&uuid=\${uuid}&serial=\${serial:uristring}&manufacturer=\${manufacturer:uristring}&product=\${product:uristring}&arch=\${buildarch}&platform=\${platform}\n`);
			expect((await machineGet(`/boot/${nextMac()}/kickstart`)).status).toBe(404);
			const notMac = await machineGet("/boot/zz/kickstart");
			expect(notMac.status).toBe(422);
			expect(fieldsOf(await notMac.json())).toEqual(["mac"]);
			// The boot timeline got the step, with the MAC.
			const events = await waitFor(async () => {
				const host = await (await provisioner.api(`/boots/hosts/${mac}`)).json();
				return host.events?.length ? host.events : null;
			}, "the boot event");
			expect(events[0].detail).toContain(`profile "${ks.name}"`);
		});

		it("records an unknown MAC as discovered, with what iPXE told, and answers the default (local disk)", async () => {
			const mac = nextMac();
			const answer = await machineGet(`/boot?mac=${mac.toUpperCase()}&uuid=2f1b8a8e-5c1e-4d7e-9a4b-0c7d2e3f4a5b&serial=VM-0042&manufacturer=QEMU&product=Standard%20PC%20%24(reboot)%3B%23&arch=x86_64&platform=pcbios`);
			expect(answer.status).toBe(200);
			const script = await answer.text();
			expect(script).toMatch(/^#!ipxe\n/);
			expect(script).toMatch(/\nexit\n$/);
			const [found] = (await (await provisioner.api(`/machines?mac=${mac}`)).json()).rows;
			expect(found).toMatchObject({ status: "discovered", macs: [mac], uuid: "2f1b8a8e-5c1e-4d7e-9a4b-0c7d2e3f4a5b", serial: "VM-0042", manufacturer: "QEMU", product: "Standard_PC___reboot___", arch: "x86_64", firmware: "bios", lastSeen: expect.any(String) });
			// Booting again keeps one row and refreshes what it reports, reduced the same way; it gets the default until it is adopted.
			expect(await (await machineGet(`/boot?mac=${mac}&platform=efi&serial=${"9".repeat(100)}%0Aid`)).text()).toMatch(/exit\n$/);
			expect((await (await provisioner.api(`/machines?mac=${mac}`)).json()).total).toBe(1);
			expect(await (await provisioner.api(`/machines/${found.id}`)).json()).toMatchObject({ serial: "9".repeat(64), firmware: "uefi" });
			expect((await (await provisioner.api(`/machines/${found.id}/plan`)).json()).why).toMatch(/not adopted/);
		});

		it("fails a boot whose template names a value the machine lacks: an iPXE script saying why, and the machine's status", async () => {
			const needy = await profile({ ipxeScript: "#!ipxe\nset hostname {{hostname}}\nset rack {{labels.rack}}\n{{#serial}}echo serial {{serial}}{{/serial}}" });
			const lacking = await machine({ labels: { role: `needy-${database}` } });
			expect((await post("/selectors", { name: `needy-${database}`, profileId: needy.id, labels: { role: `needy-${database}` } })).status).toBe(201);
			const plan = await (await provisioner.api(`/machines/${lacking.id}/plan`)).json();
			expect(plan.problems).toEqual([expect.objectContaining({ script: "ipxe", missing: ["hostname", "labels.rack"] })]);
			const answer = await machineGet(`/boot?mac=${lacking.macs[0]}`);
			expect(answer.status).toBe(200);
			const script = await answer.text();
			expect(script).toMatch(/^#!ipxe\necho Cluster Platform: profile ".*": its ipxeScript names \{\{hostname\}\}, \{\{labels.rack\}\}, which machine \d+ .* does not have\n/);
			expect(script).toMatch(/exit 1\n$/);
			const row = await (await provisioner.api(`/machines/${lacking.id}`)).json();
			expect(row.status).toBe("failed");
			expect(row.statusReason).toContain("{{hostname}}");
			// With the values, it boots (the section about the serial stays out without one).
			await put(`/machines/${lacking.id}`, { hostname: "needy.lan.example", labels: { role: `needy-${database}`, rack: "r9" } });
			expect(await (await machineGet(`/boot?mac=${lacking.macs[0]}`)).text()).toBe("#!ipxe\nset hostname needy.lan.example\nset rack r9\n");
			expect((await (await provisioner.api(`/machines/${lacking.id}`)).json()).status).toBe("provisioning");
		});

		it("ties a registration to its machine by a single-use token; wrong and replayed tokens are refused, anonymous ones still work", async () => {
			const registering = await profile({ ipxeScript: "#!ipxe\nexit", postbootScript: "#!/bin/sh\ncurl -X POST '{{registerUrl}}&ip=$IP'\n# {{registrationToken}}" });
			const target = await machine({ artifactId: SITE, labels: { role: `reg-${database}` } });
			expect((await post("/selectors", { name: `reg-${database}`, profileId: registering.id, labels: { role: `reg-${database}` } })).status).toBe(201);
			const mac = target.macs[0];
			// No token outside provisioning: 409, a script saying why.
			const early = await machineGet(`/boot/${mac}/postboot`);
			expect(early.status).toBe(409);
			expect(await early.text()).toMatch(/not provisioning/);
			// Its iPXE script begins provisioning (with a deadline); then its post-boot script carries a token.
			expect((await machineGet(`/boot?mac=${mac}`)).status).toBe(200);
			const script = await (await machineGet(`/boot/${mac}/postboot`)).text();
			const token = /machineToken=(cpm_[A-Za-z0-9_-]+)/.exec(script)?.[1];
			expect(token).toBeDefined();
			expect(script).toContain(`${provisioner.baseUrl}/api/localnodes?artifactId=${SITE}&mac=${mac}&machineToken=${token}`);
			// The token is stored only as a hash: nowhere in the machine's row.
			expect(await (await provisioner.api(`/machines/${target.id}`)).text()).not.toContain(token!);
			const register = (query: string) => fetch(`${provisioner.baseUrl}/api/localnodes?${query}`, { method: "POST" });
			const ip = database === "sqlite" ? "10.66.0.1" : "10.66.0.2";
			const wrong = await json(await register(`ip=${ip}&artifactId=${SITE}&machineToken=cpm_forged`));
			expect(wrong.status).toBe(401);
			expect(fieldsOf(wrong.body)).toEqual(["machineToken"]);
			expect((await (await provisioner.api(`/localnodes?search=${ip}&searchFields=ip`)).json()).total).toBe(0);
			// Another site than the machine's: 409 naming artifactId; a registration its own checks refuse (a loopback address):
			// neither writes a node nor uses the token up.
			const elsewhere = await json(await register(`ip=${ip}&artifactId=other.example&machineToken=${token}`));
			expect(elsewhere.status).toBe(409);
			expect(fieldsOf(elsewhere.body)).toEqual(["artifactId"]);
			const loopback = await register(`ip=127.0.0.9&artifactId=${SITE}&machineToken=${token}`);
			expect(loopback.status).toBe(422);
			expect((await (await provisioner.api(`/machines/${target.id}`)).json()).status).toBe("provisioning");
			const registered = await json(await register(`ip=${ip}&artifactId=${SITE}&mac=${mac}&machineToken=${token}`));
			expect(registered.status).toBe(201);
			expect(await (await provisioner.api(`/machines/${target.id}`)).json()).toMatchObject({ status: "ready", localnodeId: registered.body.id });
			const replayed = await json(await register(`ip=${ip}&artifactId=${SITE}&machineToken=${token}`));
			expect(replayed.status).toBe(401);
			expect(fieldsOf(replayed.body)).toEqual(["machineToken"]);
			// Ready now: its post-boot script makes no token.
			const after = await machineGet(`/boot/${mac}/postboot`);
			expect(after.status).toBe(409);
			expect(await after.text()).not.toMatch(/cpm_/);
			// The seed's anonymous registration (no token) still works; with a MAC it links a machine not yet linked,
			// but a MAC is no proof: the machine's status stays (ready comes only with the token), and a discovered one is not linked.
			const loner = await machine({});
			const anonymous = await json(await register(`ip=${ip.replace(/\d+$/, "9")}&artifactId=${SITE}&pingable=true&mac=${loner.macs[0]}`));
			expect(anonymous.status).toBe(201);
			expect(await (await provisioner.api(`/machines/${loner.id}`)).json()).toMatchObject({ status: "unknown", localnodeId: anonymous.body.id });
			const strangerMac = nextMac();
			await machineGet(`/boot?mac=${strangerMac}`);
			const [stranger] = (await (await provisioner.api(`/machines?mac=${strangerMac}`)).json()).rows;
			expect(stranger).toMatchObject({ status: "discovered" });
			expect((await register(`ip=${ip.replace(/\d+$/, "11")}&artifactId=${SITE}&mac=${strangerMac}`)).status).toBe(201);
			expect(await (await provisioner.api(`/machines/${stranger.id}`)).json()).toMatchObject({ status: "discovered", localnodeId: null });
			// A MAC is no proof: it does not move a machine already linked to another node.
			const hijack = await json(await register(`ip=${ip.replace(/\d+$/, "10")}&artifactId=${SITE}&mac=${mac}`));
			expect(hijack.status).toBe(201);
			expect((await (await provisioner.api(`/machines/${target.id}`)).json()).localnodeId).toBe(registered.body.id);
		});
	});
});

describe.each(DATABASES)("machines on %s: registration only with a machine's token (ANONYMOUS_REGISTRATION=false), discovery capped, a short provisioning timeout", (database) => {
	let provisioner: TestProvisioner;
	const api = (path: string, method = "GET", body?: unknown) => provisioner.api(path, { method, json: body });
	const machineGet = (path: string) => fetch(`${provisioner.baseUrl}/api${path}`);
	const statusOf = async (id: number) => (await (await api(`/machines/${id}`)).json()) as { status: string; statusReason: string | null };
	const created = async (fields: Record<string, unknown> = {}) => {
		const mac = nextMac();
		const res = await api("/machines", "POST", { name: `t-${database}-${mac.replace(/:/g, "")}`, macs: [mac], ...fields });
		expect(res.status).toBe(201);
		return (await res.json()) as { id: number; macs: string[] };
	};
	beforeAll(async () => {
		provisioner = await startTestProvisioner({ database, services: SERVICES, env: { ANONYMOUS_REGISTRATION: "false", MACHINES_UNKNOWN_BOOT: "none", MACHINES_DISCOVERED_MAX: "1", MACHINES_PROVISION_TIMEOUT: "2" } });
	});
	afterAll(() => provisioner?.stop());

	it("refuses a registration without a token (401 naming machineToken), takes an operator's, and answers unknown machines with nothing", async () => {
		const anonymous = await fetch(`${provisioner.baseUrl}/api/localnodes?ip=10.67.0.1&artifactId=${SITE}`, { method: "POST" });
		expect(anonymous.status).toBe(401);
		expect((await anonymous.json()).data).toEqual([expect.objectContaining({ field: "machineToken" })]);
		expect((await provisioner.api("/localnodes", { method: "POST", json: { ip: "10.67.0.2", artifactId: SITE } })).status).toBe(201);
		const unknown = await (await fetch(`${provisioner.baseUrl}/api/boot?mac=52:54:00:bb:00:01`)).text();
		expect(unknown).toMatch(/nothing to boot\nsleep 10\nexit 1\n$/);
	});

	it("records at most MACHINES_DISCOVERED_MAX discovered machines; beyond it unknown MACs get the default answer, unrecorded", async () => {
		const discovered = async () => (await (await api("/machines?status=discovered&pageSize=1")).json()).total as number;
		await machineGet(`/boot?mac=${nextMac()}`);
		expect(await discovered()).toBe(1);
		const beyond = await machineGet(`/boot?mac=${nextMac()}`);
		expect(beyond.status).toBe(200);
		expect(await beyond.text()).toMatch(/nothing to boot\nsleep 10\nexit 1\n$/);
		expect(await discovered()).toBe(1);
	});

	it("writes a boot's status only over the status it read, gives a machine set to provisioning a deadline, and fails one without", async () => {
		const machine = await created({ status: "ready" });
		const service = provisioner.broker.getLocalService("machines") as unknown as { machine(id: number): Promise<{ status: string }>; provisioning: { stepSeen(row: object, step: string, begins: boolean): Promise<void> } };
		// A boot request read it while provisioning; a registration made it ready meanwhile: the boot's step does not put it back.
		const byHand = await created();
		expect((await api(`/machines/${byHand.id}`, "PUT", { status: "provisioning" })).status).toBe(200);
		expect(await (await api(`/machines/${byHand.id}`)).json()).toMatchObject({ status: "provisioning", provisionDeadline: expect.any(String) });
		const stale = { ...(await service.machine(machine.id)), status: "provisioning" };
		await service.provisioning.stepSeen(stale, "fetched its iPXE script (stale)", true);
		expect((await statusOf(machine.id)).status).toBe("ready");
		// Provisioning with no deadline (what such a race used to leave) would never end: the sweep fails it.
		const model = (provisioner.broker.getLocalService("machines") as unknown as { adapter: { model: { update(values: object, options: object): Promise<unknown> } } }).adapter.model;
		await model.update({ status: "provisioning", provisionDeadline: null }, { where: { id: machine.id } });
		const failed = await eventually(async () => {
			const row = await statusOf(machine.id);
			return row.status === "failed" ? row : undefined;
		}, 15_000, "the sweep failing the machine with no deadline");
		expect(failed.statusReason).toMatch(/no deadline/);
	});

	it("takes a registration token only until the provisioning deadline", async () => {
		const profile = await api("/profiles", "POST", { name: `late-${database}`, ipxeScript: "#!ipxe\nexit", postbootScript: "#!/bin/sh\n# {{registrationToken}}" });
		const machine = await created({ artifactId: SITE, profileId: (await profile.json()).id });
		const mac = machine.macs[0]!;
		expect((await machineGet(`/boot?mac=${mac}`)).status).toBe(200);
		const token = /(cpm_[A-Za-z0-9_-]+)/.exec(await (await machineGet(`/boot/${mac}/postboot`)).text())?.[1];
		expect(token).toBeDefined();
		await eventually(async () => ((await statusOf(machine.id)).status === "failed" ? true : undefined), 15_000, "the deadline passing");
		const late = await fetch(`${provisioner.baseUrl}/api/localnodes?ip=10.67.0.${database === "sqlite" ? 3 : 4}&artifactId=${SITE}&machineToken=${token}`, { method: "POST" });
		expect(late.status).toBe(401);
		expect((await statusOf(machine.id)).status).toBe("failed");
	});
});
