import type { ServiceSchema } from "moleculer";
import { textRegistryMixin } from "@clusterplatform/core";

/** /api/subscripts: iPXE subscripts (kernel/initrd logic); GET /:id answers the raw text. */
export const SubscriptsService: ServiceSchema = {
	name: "subscripts",
	mixins: [textRegistryMixin("subscripts")],
};

export default SubscriptsService;
