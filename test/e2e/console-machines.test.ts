import path from "node:path";
import type { Page } from "playwright-core";
import { CONSOLE_SCREENSHOTS, launchConsoleBrowser, type TestBrowser } from "../support/chromium";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { freeUdpPort, startIpmiSim, type IpmiSim } from "../support/ipmi-sim";
import { eventually } from "../support/ports";
import { describeIf, missingProgram } from "../support/requirements";

const SCREENSHOTS = CONSOLE_SCREENSHOTS;
const SITE = `console-machines-${process.pid}.example`;
const UNKNOWN_MAC = "52:54:00:aa:bb:01";

interface Machine {
	id: number;
	name: string;
	status: string;
	labels: Record<string, string>;
	hostname: string | null;
}

/**
 * The console's Machines page in headless Chromium against a provisioner with the machines
 * services: import, the list with status, a machine's plan (profile, selector, why, rendered
 * script), a machine that booted unknown adopted from the page, and a power button's answer (here
 * the refusal: no distributor serves the machine's site — test/lan and the CLI's suite drive a real BMC).
 */
describe("web console: machines (headless Chromium)", () => {
	let provisioner: TestProvisioner;
	let browser: TestBrowser;
	let page: Page;

	const screenshot = (name: string) => page.screenshot({ path: path.join(SCREENSHOTS, `machines-${name}.png`), fullPage: true });
	const machines = async () => ((await (await provisioner.api("/machines?pageSize=100")).json()).rows as Machine[]);
	const byName = async (name: string) => (await machines()).find((m) => m.name === name);
	const row = (table: string, id: number) => page.locator(`#${table} tr[data-id="${id}"]`);

	beforeAll(async () => {
		browser = await launchConsoleBrowser();
		page = browser.page;
		provisioner = await startTestProvisioner({ services: ["gateway", "machines", "profiles", "selectors"] });
		const profile = await (await provisioner.api("/profiles", { method: "POST", json: { name: "web", ipxeScript: "#!ipxe\necho web profile for {{name}} on {{mac}}\nexit\n" } })).json();
		expect((await provisioner.api("/selectors", { method: "POST", json: { name: "web-role", profileId: profile.id, labels: { role: "web" } } })).status).toBe(201);
		await page.goto(`${provisioner.baseUrl}/console/`);
		await page.fill("#token", TEST_ADMIN_TOKEN);
		await page.click("#token-submit");
		await page.locator("#save-mainscript").waitFor();
		await page.click("nav >> text=Machines");
		await page.waitForURL("**/console/machines");
	}, 120_000);

	afterAll(async () => {
		await browser?.close();
		await provisioner?.stop();
	});

	it("imports machines from CSV and lists them with their status", async () => {
		await page.click("#import-open");
		const csv = `name,macs,arch,firmware,artifactId,labels,bmcProtocol,bmcAddress,bmcUser,bmcPassword\nweb-01,52:54:00:00:05:01,x86_64,uefi,${SITE},role=web,ipmi,127.0.0.1,admin,never-shown-${process.pid}\nweb-02,52:54:00:00:05:02,x86_64,bios,${SITE},role=web,,,,\n`;
		await page.fill("#import-text", csv);
		await page.click("#import-submit");
		expect(await page.locator("#import-result").textContent()).toBe("imported 2 machines");
		const web01 = (await byName("web-01"))!;
		await row("machines-table", web01.id).waitFor();
		expect(await page.locator("#machines-table tbody tr").count()).toBe(2);
		expect(await row("machines-table", web01.id).getAttribute("data-status")).toBe("unknown");
		expect(await row("machines-table", web01.id).textContent()).toContain("52:54:00:00:05:01");
		// The sealed BMC password is nowhere on the page.
		expect(await page.content()).not.toContain(`never-shown-${process.pid}`);

		// A bad import is refused with its line and field; nothing is written.
		await page.fill("#import-text", "name,macs\nweb-03,52:54:00:00:05:03\nweb-04,nonsense\n");
		await page.click("#import-submit");
		expect(await page.locator("#import-panel .error[role=alert]").textContent()).toMatch(/^422: .*csv line 3\.macs/);
		expect(await byName("web-03")).toBeUndefined();
		await screenshot("imported");
	});

	it("shows a machine's plan: the profile, the selector and why, and the rendered script", async () => {
		const web01 = (await byName("web-01"))!;
		await row("machines-table", web01.id).locator('button[data-action="plan"]').click();
		await page.locator("#plan-script-ipxe").waitFor();
		expect(await page.locator("#plan-profile").textContent()).toMatch(/^web \(#\d+\)$/);
		expect(await page.locator("#plan-selector").textContent()).toBe("web-role");
		expect(await page.locator("#plan-why").textContent()).toMatch(/selector "web-role" matches on /);
		expect(await page.locator("#plan-script-ipxe").textContent()).toBe("#!ipxe\necho web profile for web-01 on 52:54:00:00:05:01\nexit\n");
		await screenshot("plan");
	});

	it("shows a power button's answer next to the machine (here: no distributor serves its site)", async () => {
		const web01 = (await byName("web-01"))!;
		const web02 = (await byName("web-02"))!;
		expect(await page.locator(`#power-${web02.id}`).count()).toBe(0);
		await page.locator(`#power-${web01.id} button[data-power="status"]`).click();
		const answer = page.locator(`#power-${web01.id} .error[role=alert]`);
		await answer.waitFor();
		expect(await answer.textContent()).toMatch(/^5\d\d: .*(distributor|site)/i);
		expect(await answer.textContent()).not.toContain(`never-shown-${process.pid}`);
		await screenshot("power-refused");
	});

	it("lists a machine that booted unknown as discovered, and adopts it", async () => {
		// What iPXE sends from an unknown machine (the machine path: no token).
		const boot = await fetch(`${provisioner.baseUrl}/api/boot?mac=${UNKNOWN_MAC}&serial=SN-0042&manufacturer=QEMU&product=Standard-PC&arch=x86_64&platform=efi`);
		expect(boot.status).toBe(200);
		const discovered = (await machines()).find((m) => m.status === "discovered")!;
		expect(discovered).toBeDefined();
		// The list follows new rows by itself (it refreshes every few seconds).
		const listed = row("discovered-table", discovered.id);
		await listed.waitFor();
		expect(await listed.textContent()).toMatch(/52:54:00:aa:bb:01[\s\S]*serial SN-0042/);
		await listed.locator('button[data-action="adopt"]').click();
		await page.fill("#adopt-name", "adopted-01");
		await page.fill("#adopt-hostname", "adopted-01.lab");
		await page.fill("#adopt-labels", "role=web; rack=r2");
		await screenshot("adopt");
		await page.click("#adopt-save");
		await page.locator("#adopt-form").waitFor({ state: "detached" });
		expect(await byName("adopted-01")).toMatchObject({ id: discovered.id, status: "unknown", hostname: "adopted-01.lab", labels: { role: "web", rack: "r2" } });
		await row("machines-table", discovered.id).waitFor();
		expect(await row("discovered-table", discovered.id).count()).toBe(0);
		// Adopted, it gets its profile by the selectors: its plan says so.
		await row("machines-table", discovered.id).locator('button[data-action="plan"]').click();
		await page.locator(`#machine-plan[data-id="${discovered.id}"] #plan-script-ipxe`).waitFor();
		expect(await page.locator("#plan-script-ipxe").textContent()).toContain(`echo web profile for adopted-01 on ${UNKNOWN_MAC}`);
		await screenshot("adopted");
		expect(browser.problems).toEqual([]);
	});
});

/**
 * The power buttons against a real BMC: OpenIPMI's ipmi_sim on 127.0.0.1 holding a QEMU guest's
 * power, reached by the site's distributor worker in the provisioner's process.
 */
describeIf(missingProgram(["dnsmasq", "ipmi_sim", "ipmitool", "qemu-system-x86_64"]), "web console: power buttons against ipmi_sim", () => {
	let provisioner: TestProvisioner;
	let browser: TestBrowser;
	let page: Page;
	let sim: IpmiSim;
	let id: number;

	beforeAll(async () => {
		sim = await startIpmiSim({ port: await freeUdpPort(), qemuArgs: ["-machine", "accel=kvm:tcg"] });
		provisioner = await startTestProvisioner({
			services: ["gateway", "machines", "profiles", "selectors", "distributors", "distributor-worker"],
			env: { CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, CLUSTERPLATFORM_DISTRIBUTOR_HTTP_PORT: "0" },
		});
		await eventually(async () => ((await (await provisioner.api("/distributors")).json()).rows as { online: boolean }[]).some((row) => row.online), 30_000, "the site's distributor online");
		const created = await provisioner.api("/machines", { method: "POST", json: { name: "bmc-guest", macs: ["52:54:00:00:06:01"], artifactId: SITE, bmcProtocol: "ipmi", bmcAddress: sim.address, bmcPort: sim.port, bmcUser: sim.user, bmcPassword: sim.password } });
		id = ((await created.json()) as { id: number }).id;
		browser = await launchConsoleBrowser(60_000);
		page = browser.page;
		await page.goto(`${provisioner.baseUrl}/console/machines`);
		await page.fill("#token", TEST_ADMIN_TOKEN);
		await page.click("#token-submit");
		await page.locator(`#power-${id}`).waitFor();
	}, 120_000);

	afterAll(async () => {
		await browser?.close();
		await provisioner?.stop();
		await sim?.stop();
	}, 60_000);

	it("powers the guest on and off from the page, showing the BMC's answer: the QEMU process starts and ends", async () => {
		const answer = page.locator(`#power-${id} .power-answer`);
		const press = async (action: string, expected: string) => {
			await page.locator(`#power-${id} button[data-power="${action}"]`).click();
			await page.locator(`#power-${id} .power-answer`, { hasText: expected }).waitFor();
		};
		await press("status", "power is off");
		expect(sim.qemuPid()).toBeNull();
		await press("on", "on: power is on");
		expect(sim.qemuPid()).not.toBeNull();
		await page.screenshot({ path: path.join(SCREENSHOTS, "machines-power-on.png"), fullPage: true });
		await press("off", "off: power is off");
		await eventually(() => sim.qemuPid() === null, 15_000, "the guest's QEMU process gone");
		expect(await answer.textContent()).toBe("off: power is off");
		expect(await page.content()).not.toContain(sim.password);
		expect(browser.problems).toEqual([]);
	}, 180_000);
});
