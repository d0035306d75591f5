import fs from "node:fs";
import path from "node:path";

/**
 * The web console is a static single-page app built by Vite (sources in web/, `npm run build`)
 * into dist/web/ of this package. Node code only needs to know where that is: the gateway serves
 * it at /console/. __dirname is src/ under jest and dist/ once compiled; both sit in the package.
 */
export const CONSOLE_ROOT = path.resolve(__dirname, "..", "dist", "web");

/** Where the console is served from, below the gateway's origin. */
export const CONSOLE_PATH = "/console/";

/** How to build the console, for the message served while it is not built. */
export const CONSOLE_BUILD_HINT = "npm run build (at the repository root; it runs `npm run build -w @clusterplatform/console`)";

/** True when the built app (its index.html) is present under `root`. */
export function consoleBuilt(root: string = CONSOLE_ROOT): boolean {
	return fs.existsSync(path.join(root, "index.html"));
}
