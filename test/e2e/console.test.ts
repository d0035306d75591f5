import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Page } from "playwright-core";
import { CONSOLE_SCREENSHOTS, launchConsoleBrowser, type TestBrowser } from "../support/chromium";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "../support/provisioner";

const SCREENSHOTS = CONSOLE_SCREENSHOTS;
/** Bounds for what the page waits on: builds here take seconds, a slow CI machine gets minutes. */
const BUILD_WAIT_MS = 240_000;
const UI_WAIT_MS = 15_000;

/**
 * The web console end to end, as a newcomer uses it: a real headless Chromium against a real
 * provisioner (auth on) serving the built console — paste the token, create a mainscript, build
 * iPXE, build the ISO, download it. Screenshots of every step land in test-artifacts/console/.
 */
describe("web console (headless Chromium)", () => {
	let provisioner: TestProvisioner;
	let browser: TestBrowser;
	let page: Page;
	const downloads = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-console-downloads-"));
	let shot = 0;

	const screenshot = async (name: string) => {
		shot += 1;
		await page.screenshot({ path: path.join(SCREENSHOTS, `${String(shot).padStart(2, "0")}-${name}.png`), fullPage: true });
	};

	beforeAll(async () => {
		browser = await launchConsoleBrowser(UI_WAIT_MS);
		page = browser.page;
		for (const old of fs.readdirSync(SCREENSHOTS)) if (/^\d\d-.*\.png$/.test(old)) fs.rmSync(path.join(SCREENSHOTS, old));
		provisioner = await startTestProvisioner({
			services: ["gateway", "mainscripts", "distributors", "ipxes", "ipxes-worker", "grubs", "grubs-worker", "syslinuxs", "syslinuxs-worker", "isos", "isos-worker"],
		});
	}, 120_000);

	afterAll(async () => {
		await browser?.close();
		await provisioner?.stop();
		fs.rmSync(downloads, { recursive: true, force: true });
	});

	it("is served at /console/ (/ redirects there) and is no part of the API document", async () => {
		const root = await fetch(`${provisioner.baseUrl}/`, { redirect: "manual" });
		expect(root.status).toBe(302);
		expect(root.headers.get("location")).toBe("/console/");
		const index = await fetch(`${provisioner.baseUrl}/console/`);
		expect(index.status).toBe(200);
		expect(index.headers.get("content-type")).toBe("text/html; charset=utf-8");
		const document = await (await provisioner.api("/openapi.json")).json();
		expect(Object.keys(document.paths).filter((p) => !p.startsWith("/api/"))).toEqual([]);
	});

	it("asks for a token, refuses a wrong one, and takes the right one", async () => {
		await page.goto(`${provisioner.baseUrl}/`);
		expect(new URL(page.url()).pathname).toBe("/console/");
		await page.locator("#token").waitFor();
		await screenshot("token-prompt");

		await page.fill("#token", "not-a-valid-token");
		await page.click("#token-submit");
		await page.locator("#token-reason").waitFor();
		expect(await page.locator("#token-reason").textContent()).toMatch(/refused/);
		await screenshot("wrong-token");

		await page.fill("#token", TEST_ADMIN_TOKEN);
		await page.click("#token-submit");
		await page.locator("#save-mainscript").waitFor();
		expect(await page.evaluate(() => sessionStorage.getItem("clusterplatform.token"))).toBe(TEST_ADMIN_TOKEN);
		await screenshot("deploy-page");
	});

	const MAINSCRIPT = `#!ipxe\necho console end-to-end ${process.pid}\nshell\n`;
	let mainscriptId: number;

	it("creates a mainscript", async () => {
		await page.fill("#mainscript-text", MAINSCRIPT);
		await page.click("#save-mainscript");
		const saved = page.locator("#mainscript-saved");
		await saved.waitFor();
		mainscriptId = Number(/#(\d+)/.exec((await saved.textContent()) ?? "")![1]);
		// What the page says it did, the API confirms: the raw text hosts get.
		expect(await (await fetch(`${provisioner.baseUrl}/api/mainscripts/${mainscriptId}`)).text()).toBe(MAINSCRIPT);
		expect(await page.inputValue("#ipxe-script")).toBe(`#!ipxe\ndhcp\nchain ${provisioner.baseUrl}/api/mainscripts/${mainscriptId}\n`);
		await screenshot("mainscript-created");
	});

	it("builds the iPXE bootloaders and shows them reach done", async () => {
		await page.click("#build-ipxe");
		const ipxes = page.locator('#step-ipxe .build[data-entity="ipxes"]');
		// The third row reported done (the page polls each row until it is done or failed).
		await page.locator('#step-ipxe .build[data-entity="ipxes"][data-status="done"]').nth(2).waitFor({ timeout: BUILD_WAIT_MS });
		expect(await ipxes.count()).toBe(3);
		const rows = (await (await provisioner.api("/ipxes")).json()).rows as { status: string; script: string }[];
		expect(rows.map((r) => r.status)).toEqual(["done", "done", "done"]);
		for (const row of rows) expect(row.script).toContain(`/api/mainscripts/${mainscriptId}`);
		await screenshot("ipxe-done");
	});

	it("shows the API's 422 naming the field when the ISO label is not allowed, and builds nothing", async () => {
		await page.fill("#iso-label", "no/slashes");
		await page.click("#build-iso");
		const error = page.locator("#step-iso .error[role=alert]");
		await error.waitFor();
		expect(await error.textContent()).toMatch(/^422: label: must be letters, digits/);
		await screenshot("iso-label-refused");
		for (const builder of ["grubs", "syslinuxs", "isos"]) expect({ builder, total: (await (await provisioner.api(`/${builder}`)).json()).total }).toEqual({ builder, total: 0 });
	});

	it("builds the ISO from its parts, shows progress to done, and downloads a real ISO 9660 image", async () => {
		await page.fill("#iso-label", "CONSOLE E2E");
		await page.click("#build-iso");
		await page.locator('#step-iso .build[data-entity="isos"]').waitFor({ timeout: BUILD_WAIT_MS });
		await screenshot("iso-building");
		const link = page.locator("#download-iso");
		await link.waitFor({ timeout: BUILD_WAIT_MS });
		expect(await page.locator('#step-iso .build[data-entity="isos"]').getAttribute("data-status")).toBe("done");
		await screenshot("iso-done");

		const [download] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), link.click()]);
		const file = path.join(downloads, download.suggestedFilename());
		await download.saveAs(file);
		expect(download.suggestedFilename()).toMatch(/\.iso$/);
		const bytes = fs.readFileSync(file);
		expect(bytes.length).toBeGreaterThan(0x8006);
		// The ISO 9660 primary volume descriptor: "CD001" at byte 0x8001.
		expect(bytes.subarray(0x8001, 0x8006).toString("latin1")).toBe("CD001");
		const isos = (await (await provisioner.api("/isos")).json()).rows as { status: string; label: string; script: string }[];
		expect(isos).toEqual([expect.objectContaining({ status: "done", label: "CONSOLE E2E", script: expect.stringContaining(`/api/mainscripts/${mainscriptId}`) })]);
	}, BUILD_WAIT_MS * 2);

	it("lists the builds with their status and download links", async () => {
		await page.click("nav >> text=Builds");
		await page.locator("#builds-isos tbody tr").first().waitFor();
		expect(new URL(page.url()).pathname).toBe("/console/builds");
		expect(await page.locator('#builds-isos tbody tr[data-status="done"] a[download]').count()).toBe(1);
		expect(await page.locator('#builds-ipxes tbody tr[data-status="done"]').count()).toBe(3);
		await screenshot("builds");
		// A client route loaded directly (reload) is answered by index.html and still works.
		await page.reload();
		await page.locator("#builds-isos tbody tr").first().waitFor();
	});

	it("shows the mainscript in the registries and edits it", async () => {
		await page.click("nav >> text=Registries");
		const row = page.locator("tr", { hasText: `console end-to-end ${process.pid}` });
		await row.waitFor();
		await row.locator("button", { hasText: "Edit" }).click();
		const edited = `${MAINSCRIPT}echo edited in the console\n`;
		await page.fill("#registry-text", edited);
		await screenshot("registry-editor");
		await page.click("#registry-save");
		await page.locator("#registry-text").waitFor({ state: "detached" });
		expect(await (await fetch(`${provisioner.baseUrl}/api/mainscripts/${mainscriptId}`)).text()).toBe(edited);
	});

	it("sends the operator back to the token field when the API refuses the stored token", async () => {
		await page.evaluate(() => sessionStorage.setItem("clusterplatform.token", "revoked-or-mistyped"));
		await page.goto(`${provisioner.baseUrl}/console/builds`);
		await page.locator("#token").waitFor();
		expect(await page.locator("#token-reason").textContent()).toMatch(/refused/);
		expect(await page.evaluate(() => sessionStorage.getItem("clusterplatform.token"))).toBeNull();
		await screenshot("token-refused");
		// No uncaught error and no Content-Security-Policy violation in the whole session.
		expect(browser.problems).toEqual([]);
	});
});
