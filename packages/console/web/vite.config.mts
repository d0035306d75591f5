import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));

// The console is served by the gateway at /console/; the build lands in the package's dist/web,
// where @clusterplatform/console's CONSOLE_ROOT points.
export default defineConfig({
	root: here,
	base: "/console/",
	logLevel: "warn",
	oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
	build: {
		outDir: fileURLToPath(new URL("../dist/web", import.meta.url)),
		emptyOutDir: true,
		// Everything as files under assets/ (hashed names): the page's CSP allows no inline code.
		assetsInlineLimit: 0,
	},
});
