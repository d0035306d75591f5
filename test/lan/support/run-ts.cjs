// Runs a TypeScript entry point of this repository in a plain node process (e.g. inside a network
// namespace via `ip netns exec`), the way jest sees the sources: @clusterplatform/x resolves to
// packages/x/src and .ts files are compiled by swc on load.
// Usage: node test/lan/support/run-ts.cjs <file.ts> [args…]
const fs = require("node:fs");
const Module = require("node:module");
const path = require("node:path");
const swc = require("@swc/core");

const ROOT = path.resolve(__dirname, "../../..");
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
	const match = /^@clusterplatform\/([a-z0-9-]+)$/.exec(request);
	const target = match ? path.join(ROOT, "packages", match[1], "src", "index.ts") : request;
	return resolve.call(this, target, parent, ...rest);
};
require.extensions[".ts"] = (module, filename) => {
	const { code } = swc.transformSync(fs.readFileSync(filename, "utf8"), {
		filename,
		jsc: { parser: { syntax: "typescript" }, target: "es2023" },
		module: { type: "commonjs" },
		sourceMaps: "inline",
	});
	module._compile(code, filename);
};

const [entry, ...args] = process.argv.slice(2);
if (!entry) {
	console.error("usage: run-ts.cjs <file.ts> [args…]");
	process.exit(2);
}
const file = path.resolve(entry);
process.argv = [process.argv[0], file, ...args];
require(file);
