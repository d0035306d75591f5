import fs from "node:fs";
import path from "node:path";
import type { Config } from "jest";

// jest may load this file as CommonJS (ts-node) or as an ES module (Node's type stripping).
const ROOT = typeof __dirname === "string" ? __dirname : process.cwd();

/**
 * Dependencies published as ES modules only (execa and its helpers): jest runs CommonJS, so these
 * are compiled like our sources. Found by their package.json "type", so the list cannot go stale.
 */
function esmOnlyPackages(): string[] {
	const roots = [path.join(ROOT, "node_modules"), ...fs.readdirSync(path.join(ROOT, "packages")).map((p) => path.join(ROOT, "packages", p, "node_modules"))];
	const names = new Set<string>();
	for (const root of roots) {
		if (!fs.existsSync(root)) continue;
		for (const entry of fs.readdirSync(root)) {
			const candidates = entry.startsWith("@") ? fs.readdirSync(path.join(root, entry)).map((sub) => `${entry}/${sub}`) : [entry];
			for (const name of candidates) {
				try {
					const manifest = JSON.parse(fs.readFileSync(path.join(root, name, "package.json"), "utf8"));
					if (manifest.type === "module") names.add(name);
				} catch {
					// not a package
				}
			}
		}
	}
	return [...names];
}

const swc = ["@swc/jest", { jsc: { parser: { syntax: "typescript" }, target: "es2023" }, module: { type: "commonjs" } }];

/**
 * Tests run on the TypeScript sources (packages resolve to src/, not dist/). Real servers
 * (PostgreSQL, NATS, Redis, dnsmasq, QEMU) are started by the tests themselves on loopback or in
 * network namespaces they create; see test/support/.
 */
const config: Config = {
	testEnvironment: "node",
	roots: ["<rootDir>/packages", "<rootDir>/test"],
	testMatch: ["**/test/**/*.test.ts"],
	transform: { "^.+\\.(t|j|mj)s$": swc as never },
	transformIgnorePatterns: [`/node_modules/(?!(${esmOnlyPackages().map((n) => n.replace(/[.+]/g, "\\$&")).join("|")})/)`],
	moduleNameMapper: {
		// The test kit (test/support, a workspace package): every suite imports it by name.
		"^@clusterplatform/test-kit/(.+)$": "<rootDir>/test/support/$1",
		"^@clusterplatform/([a-z0-9-]+)$": "<rootDir>/packages/$1/src",
		// Exports only an "import" condition, which jest's CommonJS resolver does not try.
		"^unicorn-magic$": "<rootDir>/node_modules/unicorn-magic/node.js",
	},
	globalSetup: "<rootDir>/test/support/global-setup.ts",
	globalTeardown: "<rootDir>/test/support/global-teardown.ts",
	reporters: ["default", "<rootDir>/test/support/summary-reporter.js"],
	testTimeout: 60_000,
};

export default config;
