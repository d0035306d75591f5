import type { ServiceSchema } from "moleculer";
import { textRegistryMixin } from "@clusterplatform/core";

/** /api/mainscripts: iPXE mainscripts (menus); GET /:id answers the raw text. */
export const MainscriptsService: ServiceSchema = {
	name: "mainscripts",
	mixins: [textRegistryMixin("mainscripts")],
};

export default MainscriptsService;
