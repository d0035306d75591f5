import type { ServiceSchema } from "moleculer";
import { textRegistryMixin } from "@clusterplatform/core";

/** /api/prebootscripts: Scripts run before the OS installation; GET /:id answers the raw text. */
export const PrebootscriptsService: ServiceSchema = {
	name: "prebootscripts",
	mixins: [textRegistryMixin("prebootscripts")],
};

export default PrebootscriptsService;
