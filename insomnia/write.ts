/** `npm run insomnia`: regenerate insomnia/workspace.json (see generate.ts). */
import fs from "node:fs";
import path from "node:path";
import { generateWorkspace, serializeWorkspace, WORKSPACE_FILE } from "./generate.ts";

const here = import.meta.dirname;
const workspace = await generateWorkspace(path.resolve(here, ".."));
fs.writeFileSync(path.join(here, WORKSPACE_FILE), serializeWorkspace(workspace));
const requests = workspace.resources.filter((r) => r._type === "request").length;
console.log(`insomnia/${WORKSPACE_FILE}: ${requests} requests`);
process.exit(0);
