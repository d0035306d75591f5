import net from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import { ARTIFACT_ID_PARAM, BOOLEAN_PARAM, DataTypes, entityMixin, respondCreated, type RequestMeta } from "@clusterplatform/core";

const IP_PARAM = {
	type: "string",
	trim: true,
	custom: (value: string, errors: { type: string; actual: unknown }[]) => {
		if (net.isIP(value) === 0) errors.push({ type: "stringPattern", actual: value });
		return value;
	},
	messages: { stringPattern: "The 'ip' field must be an IPv4 or IPv6 address." },
};

interface Registration {
	ip: string;
	artifactId: string;
	pingable?: boolean;
}

/**
 * /api/localnodes: installed hosts register here from their post-boot script
 * (POST /api/localnodes?ip=…&artifactId=…&pingable=true). Registering again updates the row.
 */
export const LocalnodesService: ServiceSchema = {
	name: "localnodes",
	mixins: [
		entityMixin({
			name: "localnodes",
			fields: {
				ip: { type: DataTypes.STRING(45), allowNull: false, unique: "localnode_site_ip" },
				artifactId: { type: DataTypes.STRING(253), allowNull: false, unique: "localnode_site_ip" },
				pingable: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
			},
			params: { ip: IP_PARAM, artifactId: ARTIFACT_ID_PARAM, pingable: { ...BOOLEAN_PARAM, optional: true } },
		}),
	],
	actions: {
		create: {
			async handler(this: any, ctx: Context<Registration, RequestMeta>) {
				const { ip, artifactId, pingable } = ctx.params;
				const changes = pingable === undefined ? {} : { pingable };
				const existing = await this.adapter.findOne({ where: { ip, artifactId } });
				if (existing) {
					const row = await this.adapter.updateById(existing.id, { $set: changes });
					const json = await this.transformDocuments(ctx, {}, row);
					await this.entityChanged("updated", json, ctx);
					return json;
				}
				try {
					return respondCreated(ctx, await this._create(ctx, { ip, artifactId, ...changes }));
				} catch (err) {
					// Two registrations raced; the unique index kept one row: update it instead.
					if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
					const row = await this.adapter.findOne({ where: { ip, artifactId } });
					return this.transformDocuments(ctx, {}, await this.adapter.updateById(row.id, { $set: changes }));
				}
			},
		},
	},
};

export default LocalnodesService;
