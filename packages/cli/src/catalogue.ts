import type { ServiceSchema } from "moleculer";
import { GatewayService } from "@clusterplatform/gateway";
import { KickstartsService } from "@clusterplatform/kickstarts";
import { LocalnodesService } from "@clusterplatform/localnodes";
import { MainscriptsService } from "@clusterplatform/mainscripts";
import { PostbootscriptsService } from "@clusterplatform/postbootscripts";
import { PrebootscriptsService } from "@clusterplatform/prebootscripts";
import { SshkeyService } from "@clusterplatform/sshkey";
import { SshkeysService } from "@clusterplatform/sshkeys";
import { SubscriptsService } from "@clusterplatform/subscripts";

export interface ServiceEntry {
	schema: ServiceSchema;
	/** Needs Redis (a queue producer or worker). */
	queue?: boolean;
	/** System programs it runs: [binary, Debian package]. */
	binaries?: [string, string][];
	/** Started by `start` with no names; site-side services (the distributor) are started on their own. */
	default?: boolean;
}

/** Every service this build can run, by the name `clusterplatform start <name…>` takes. */
export const CATALOGUE: Record<string, ServiceEntry> = {
	gateway: { schema: GatewayService, default: true },
	mainscripts: { schema: MainscriptsService, default: true },
	subscripts: { schema: SubscriptsService, default: true },
	kickstarts: { schema: KickstartsService, default: true },
	prebootscripts: { schema: PrebootscriptsService, default: true },
	postbootscripts: { schema: PostbootscriptsService, default: true },
	sshkeys: { schema: SshkeysService, default: true },
	sshkey: { schema: SshkeyService, default: true, binaries: [["ssh-keygen", "openssh-client"]] },
	localnodes: { schema: LocalnodesService, default: true },
};
