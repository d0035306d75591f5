import type { Context, ServiceSchema } from "moleculer";
import { ID_PARAM, defineMixin, mayActForSite, siteOfNode, type EntityVars } from "@clusterplatform/core";
import type { TunnelColumns, TunnelGrant } from "./manager";
import { GRANTS_PUSH_MS, TUNNELS_CHANGED_EVENT, TUNNEL_PROBLEM_EVENT } from "./settings";

interface TunnelClientNode {
	nodeID: string;
	artifactId: string;
}

export interface TunnelGrantsMethods {
	tunnelClients(): TunnelClientNode[];
	pushGrants(artifactId?: string): Promise<void>;
	/** The host's: a site's live tunnels with their credentials. */
	siteGrants(artifactId: string): Promise<TunnelGrant[]>;
}

interface TunnelGrantsVars extends EntityVars<TunnelColumns> {
	/** The push under way; the next one waits for it. */
	pushing?: Promise<void>;
	grantsTimer?: NodeJS.Timeout;
}

/**
 * The manager's half of handing tunnels to sites. A site's credential may not call the cluster, so
 * the manager pushes each site's grants (with their passwords) to that site's tunnel-clients — and
 * only to nodes whose ID names the site (core/bus.ts) — on a change, when a client appears, and every
 * GRANTS_PUSH_MS. A client's problem comes back as an event, taken only from a node of the tunnel's site.
 */
export const tunnelGrantsMixin: Partial<ServiceSchema> = defineMixin<TunnelGrantsMethods, TunnelGrantsVars>({
	events: {
		[TUNNELS_CHANGED_EVENT](ctx: Context<{ artifactId: string }>) {
			// The cluster's tunnels services say so; a site's node has no business to (it would only make work).
			if (ctx.nodeID && siteOfNode(ctx.nodeID) !== null) return;
			void this.pushGrants(ctx.params.artifactId);
		},
		"$services.changed"() {
			void this.pushGrants();
		},
		[TUNNEL_PROBLEM_EVENT]: {
			params: { id: ID_PARAM, reason: { type: "string", max: 1000 } },
			async handler(ctx: Context<{ id: number; reason: string }>) {
				const row = await this.adapter.findById(ctx.params.id);
				if (!row || row.get("status") === "closed" || !mayActForSite(this.broker, ctx.nodeID!, row.get("artifactId"))) return;
				await this.adapter.updateById(ctx.params.id, { $set: { status: "pending", statusReason: ctx.params.reason } });
			},
		},
	},
	methods: {
		tunnelClients(): TunnelClientNode[] {
			const services = this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true, withActions: false });
			return services
				.filter((s) => s.name === "tunnel-client" && typeof s.nodeID === "string" && typeof s.metadata?.artifactId === "string")
				.map((s) => ({ nodeID: s.nodeID!, artifactId: String(s.metadata.artifactId) }))
				.filter((client) => mayActForSite(this.broker, client.nodeID, client.artifactId));
		},
		/** Push grants to every client (of one site, when named); serialised, so pushes never interleave. */
		pushGrants(artifactId?: string): Promise<void> {
			const pushing = (this.pushing ?? Promise.resolve()).then(async () => {
				for (const client of this.tunnelClients()) {
					if (artifactId !== undefined && client.artifactId !== artifactId) continue;
					const grants = await this.siteGrants(client.artifactId);
					await this.broker
						.call("tunnel-client.apply", { grants }, { nodeID: client.nodeID, timeout: 10_000 })
						.catch((err: Error) => this.logger.warn(`tunnels of site "${client.artifactId}" not handed to ${client.nodeID}: ${err.message}`));
				}
			});
			this.pushing = pushing;
			return pushing;
		},
	},
	started() {
		this.grantsTimer = setInterval(() => void this.pushGrants(), GRANTS_PUSH_MS);
	},
	async stopped() {
		clearInterval(this.grantsTimer);
		await this.pushing;
	},
});
