import path from "node:path";
import type { Page } from "playwright-core";
import { CATALOGUE } from "@clusterplatform/cli";
import { storeFor } from "@clusterplatform/core";
import { CONSOLE_SCREENSHOTS, launchConsoleBrowser, type TestBrowser } from "../support/chromium";
import { TEST_ADMIN_TOKEN, startTestProvisioner, type TestProvisioner } from "../support/provisioner";
import { freePort } from "../support/ports";
import { startSshNode, type SshNode } from "../support/ssh-node";

const SCREENSHOTS = CONSOLE_SCREENSHOTS;
const SITE = `console-site-${process.pid}`;
/** The installed node: an address of its own on loopback, SSH on a free port it registers with. */
const NODE_IP = "127.0.0.22";
const HAS_BOOTS = "boots" in CATALOGUE;

/**
 * The console's site views in headless Chromium against a provisioner with an in-process distributor
 * worker: the distributor's on/off state and settings, registering a node, its reachability, a
 * script run on it with its output, and the boot timeline. The distributor is configured but never
 * switched on: that would start dnsmasq, which test/lan does inside network namespaces.
 */
describe("web console: distributors, localnodes, boots (headless Chromium)", () => {
	let provisioner: TestProvisioner;
	let browser: TestBrowser;
	let page: Page;
	let node: SshNode;
	let sshPort: number;
	let keys: { publicKey: string; privateKey: string };

	const screenshot = (name: string) => page.screenshot({ path: path.join(SCREENSHOTS, `sites-${name}.png`), fullPage: true });
	const go = async (view: string) => {
		await page.click(`nav >> text=${view}`);
		await page.waitForURL(`**/console/${view.toLowerCase()}`);
	};

	beforeAll(async () => {
		browser = await launchConsoleBrowser();
		page = browser.page;
		provisioner = await startTestProvisioner({
			services: ["gateway", "distributors", "distributor-worker", "localnodes", "scriptruns", "sshkeys", "sshkey", ...(HAS_BOOTS ? ["boots"] : [])],
			// The node is a stand-in SSH server on a loopback address: a lab setting, off by default.
			env: { CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID: SITE, ALLOW_LOOPBACK_NODES: "true" },
		});
		keys = await (await provisioner.api("/sshkey")).json();
		sshPort = await freePort();
		node = await startSshNode(NODE_IP, sshPort, keys.publicKey);
		await page.goto(`${provisioner.baseUrl}/console/`);
		await page.fill("#token", TEST_ADMIN_TOKEN);
		await page.click("#token-submit");
		await page.locator("#save-mainscript").waitFor();
	}, 120_000);

	afterAll(async () => {
		await browser?.close();
		await node?.stop();
		await provisioner?.stop();
	});

	it("shows the site's distributor online and off, relays the API's refusal to switch it on unconfigured, and configures it", async () => {
		await go("Distributors");
		const row = page.locator("tr", { hasText: SITE });
		await row.waitFor();
		expect(await row.textContent()).toMatch(/online.*off/);
		await row.locator("button", { hasText: "Turn on" }).click();
		await page.locator(".error", { hasText: "not configured" }).waitFor();

		const store = storeFor(provisioner.config);
		const bios = (await store.putFile("boot/undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe")).url;
		const uefi = (await store.putFile("boot/ipxe.efi", "/usr/lib/ipxe/ipxe.efi")).url;
		await row.locator("button", { hasText: "Settings" }).click();
		await page.fill("#distributor-device", "lo");
		await page.fill("#distributor-range", "127.0.0.1");
		await page.fill("#distributor-ipxePxeBiosUrl", bios);
		await page.fill("#distributor-ipxePxeUefiUrl", uefi);
		await page.click("button >> text=Update");
		await page.locator("#distributor-device").waitFor({ state: "detached" });
		await row.locator("code", { hasText: "lo" }).waitFor();
		await screenshot("distributors");
		const [saved] = (await (await provisioner.api(`/distributors?search=${SITE}&searchFields=artifactId`)).json()).rows;
		expect(saved).toMatchObject({ device: "lo", range: "127.0.0.1", ipxePxeBiosUrl: bios, ipxePxeUefiUrl: uefi, on: false, online: true });
	});

	it("stores the site's private key through the sshkeys editor", async () => {
		await go("Registries");
		await page.click("button[role=tab] >> text=sshkeys");
		await page.click("#registry-new");
		await page.fill("#registry-artifact", SITE);
		await page.check("#registry-private");
		await page.fill("#registry-text", keys.privateKey);
		await page.click("#registry-save");
		await page.locator("tr", { hasText: "(private key)" }).waitFor();
	});

	it("shows a registered node's reachability and runs a script on it, with its output", async () => {
		// The node registers itself as its post-boot script would: no token.
		const registered = await fetch(`${provisioner.baseUrl}/api/localnodes`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ip: NODE_IP, artifactId: SITE, sshPort }) });
		expect(registered.status).toBe(201);
		await go("Localnodes");
		const row = page.locator("tr", { hasText: NODE_IP });
		await row.waitFor();
		// Checked from the site's distributor right after registering; the view refreshes every 10 s.
		await row.locator(".badge", { hasText: /^reachable$/ }).waitFor({ timeout: 30_000 });
		await row.locator("button", { hasText: "Run script" }).click();
		// No script before the operator accepted the node's host key, compared with the one it presents.
		expect(await page.locator("#run-script").isDisabled()).toBe(true);
		await page.click("#show-host-key");
		expect(await page.locator("#presented-host-key").textContent()).toBe(node.fingerprint);
		await screenshot("localnodes-host-key");
		await page.click("#accept-host-key");
		expect(await page.locator("#accepted-host-key").textContent()).toBe(node.fingerprint);
		await page.fill("#script-text", `echo "hello from the console ${process.pid}"\necho "to stderr" >&2\nexit 3\n`);
		await page.click("#run-script");
		const result = page.locator(".script-result");
		await result.waitFor({ timeout: 30_000 });
		expect(await result.locator("strong").textContent()).toBe("3");
		const [stdout, stderr] = await result.locator("pre").allTextContents();
		expect(stdout).toBe(`hello from the console ${process.pid}\n`);
		expect(stderr).toBe("to stderr\n");
		expect(node.execs).toEqual(["/bin/sh -s"]);
		await screenshot("localnodes-script");
		// The run is in the audit log.
		const runs = (await (await provisioner.api("/scriptruns")).json()).rows;
		expect(runs).toEqual([expect.objectContaining({ ip: NODE_IP, artifactId: SITE, code: 3 })]);
	});

	it("shows each host's boot steps and its timeline, when the API offers one", async () => {
		await go("Boots");
		if (!HAS_BOOTS) {
			await page.locator("#boots-unavailable").waitFor();
			console.log("Boots view: this build has no boots service; the view says so (checked).");
			return;
		}
		// The registration above came from this machine without a token: a "registered" boot step.
		const row = page.locator("tr[data-host='127.0.0.1']");
		await row.waitFor({ timeout: 30_000 });
		expect(await row.textContent()).toContain("registered");
		await row.locator("button", { hasText: "Timeline" }).click();
		await page.locator("#boot-timeline tbody tr", { hasText: "POST /api/localnodes" }).waitFor();
		await screenshot("boots");
	});

	it("ran without page errors or Content-Security-Policy violations", () => {
		expect(browser.problems).toEqual([]);
	});
});
