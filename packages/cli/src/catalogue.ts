import type { ServiceSchema } from "moleculer";
import { BootsService } from "@clusterplatform/boots";
import { DistributorWorkerService, DistributorsService } from "@clusterplatform/distributor";
import { DnsWorkerService, DnsesService } from "@clusterplatform/dns";
import { GatewayService } from "@clusterplatform/gateway";
import { GrubsService, GrubsWorkerService } from "@clusterplatform/grub";
import { IpxesService, IpxesWorkerService } from "@clusterplatform/ipxe";
import { IsosService, IsosWorkerService } from "@clusterplatform/iso";
import { KickstartsService } from "@clusterplatform/kickstarts";
import { EnrolmentsService, LocalnodesService, ScriptRunsService } from "@clusterplatform/localnodes";
import { MachinesService, ProfilesService, SelectorsService } from "@clusterplatform/machines";
import { MainscriptsService } from "@clusterplatform/mainscripts";
import { MirrorsService, MirrorsWorkerService } from "@clusterplatform/mirrors";
import { PostbootscriptsService } from "@clusterplatform/postbootscripts";
import { PrebootscriptsService } from "@clusterplatform/prebootscripts";
import { SshkeyService } from "@clusterplatform/sshkey";
import { SshkeysService } from "@clusterplatform/sshkeys";
import { SubscriptsService } from "@clusterplatform/subscripts";
import { SyslinuxsService, SyslinuxsWorkerService } from "@clusterplatform/syslinux";
import { TunnelClientService, TunnelServerService, TunnelsService } from "@clusterplatform/tunnels";

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
	scriptruns: { schema: ScriptRunsService, default: true },
	enrolments: { schema: EnrolmentsService, default: true },
	boots: { schema: BootsService, default: true },
	machines: { schema: MachinesService, default: true },
	profiles: { schema: ProfilesService, default: true },
	selectors: { schema: SelectorsService, default: true },
	distributors: { schema: DistributorsService, default: true },
	"distributor-worker": { schema: DistributorWorkerService, binaries: [["dnsmasq", "dnsmasq-base"]] },
	dnses: { schema: DnsesService, default: true },
	"dns-worker": { schema: DnsWorkerService, binaries: [["dnsmasq", "dnsmasq-base"]] },
	grubs: { schema: GrubsService, queue: true, default: true },
	"grubs-worker": { schema: GrubsWorkerService, queue: true, default: true, binaries: [["grub-mkstandalone", "grub-efi-amd64-bin"], ["mkfs.vfat", "dosfstools"], ["mcopy", "mtools"], ["zip", "zip"]] },
	syslinuxs: { schema: SyslinuxsService, queue: true, default: true },
	"syslinuxs-worker": { schema: SyslinuxsWorkerService, queue: true, default: true },
	// The worker checks its toolchain at start: make, gcc, perl with IPXE_SOURCE_DIR, else Debian's ipxe package.
	ipxes: { schema: IpxesService, queue: true, default: true },
	"ipxes-worker": { schema: IpxesWorkerService, queue: true, default: true },
	isos: { schema: IsosService, queue: true, default: true },
	"isos-worker": { schema: IsosWorkerService, queue: true, default: true, binaries: [["xorriso", "xorriso"], ["unzip", "unzip"], ["mcopy", "mtools"], ["mkfs.vfat", "dosfstools"]] },
	mirrors: { schema: MirrorsService, queue: true, default: true },
	"mirrors-worker": { schema: MirrorsWorkerService, queue: true, default: true, binaries: [["rsync", "rsync"]] },
	tunnels: { schema: TunnelsService, default: true },
	// The public SSH endpoint of tunnels (TUNNEL_SSH_PORT); started on its own, it needs a reachable port.
	"tunnel-server": { schema: TunnelServerService },
	// Site side, next to the distributor worker (CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID).
	"tunnel-client": { schema: TunnelClientService },
};
