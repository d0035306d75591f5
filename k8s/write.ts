/** `npm run k8s`: regenerate k8s/base/services.yaml (see generate.ts). */
import fs from "node:fs";
import path from "node:path";
import { renderServicesYaml, SERVICES_FILE } from "./generate.ts";

fs.writeFileSync(path.join(import.meta.dirname, SERVICES_FILE), renderServicesYaml());
console.log(`k8s/${SERVICES_FILE} written`);
process.exit(0);
