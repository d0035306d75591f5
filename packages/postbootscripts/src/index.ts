import type { ServiceSchema } from "moleculer";
import { textRegistryMixin } from "@clusterplatform/core";

/** /api/postbootscripts: Scripts run after the OS installation; GET /:id answers the raw text. */
export const PostbootscriptsService: ServiceSchema = {
	name: "postbootscripts",
	mixins: [textRegistryMixin("postbootscripts")],
};

export default PostbootscriptsService;
