import type { ServiceSchema } from "moleculer";
import { textRegistryMixin } from "@clusterplatform/core";

/** /api/kickstarts: Kickstart files; GET /:id answers the raw text. */
export const KickstartsService: ServiceSchema = {
	name: "kickstarts",
	mixins: [textRegistryMixin("kickstarts")],
};

export default KickstartsService;
