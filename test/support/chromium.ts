import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { CONSOLE_ROOT, consoleBuilt } from "@clusterplatform/console";

/** Debian's chromium (apt package `chromium`; scripts/setup installs it). Never a downloaded browser. */
export const CHROMIUM = "/usr/bin/chromium";
/** As this machine needs them: no sandbox as root, no background connections to a closed network. */
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export interface TestBrowser {
	context: BrowserContext;
	page: Page;
	/** Uncaught page errors and console errors (CSP violations among them), except failed loads the test provoked (401s). */
	problems: string[];
	close(): Promise<void>;
}

/**
 * Headless Chromium with a fresh profile (--user-data-dir) that is removed on close. Fails clearly
 * when Debian's chromium is not installed: browser tests never skip silently.
 */
export async function launchChromium(viewport = { width: 1280, height: 900 }): Promise<TestBrowser> {
	if (!fs.existsSync(CHROMIUM)) {
		throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; scripts/setup lists it). Browser tests do not skip without it.`);
	}
	const profile = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-chromium-"));
	const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, acceptDownloads: true, viewport, timeout: 60_000 });
	const page = context.pages()[0] ?? (await context.newPage());
	const problems: string[] = [];
	page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
	page.on("console", (message) => {
		if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) problems.push(`console error: ${message.text()}`);
	});
	return {
		context,
		page,
		problems,
		async close() {
			await context.close();
			fs.rmSync(profile, { recursive: true, force: true });
		},
	};
}

/** Where the console's browser tests keep their screenshots (looked at by people, kept as artifacts). */
export const CONSOLE_SCREENSHOTS = path.resolve(__dirname, "..", "..", "test-artifacts", "console");

/** Chromium for a console test, waiting `timeoutMs` for the page; fails when the console is not built. */
export async function launchConsoleBrowser(timeoutMs = 15_000): Promise<TestBrowser> {
	if (!consoleBuilt()) throw new Error(`The console is not built (${CONSOLE_ROOT}/index.html missing): run npm run build first (npm test's pretest does).`);
	fs.mkdirSync(CONSOLE_SCREENSHOTS, { recursive: true });
	const browser = await launchChromium();
	browser.page.setDefaultTimeout(timeoutMs);
	return browser;
}
