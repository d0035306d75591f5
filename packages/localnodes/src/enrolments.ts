import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import { ARTIFACT_ID_PARAM, BOOLEAN_PARAM, ConflictError, DataTypes, defineService, entityMixin, respondCreated, type EntityMethods, type EntityVars, type RequestMeta } from "@clusterplatform/core";

const TOKEN_PREFIX = "cpe_";

function sha256(text: string): Buffer {
	return createHash("sha256").update(text, "utf8").digest();
}

/** How a registration stands with its site's enrolment. */
export type EnrolmentCheck = "enrolled" | "not-required" | "refused";

/**
 * /api/enrolments: a secret per site that the site's post-boot script carries when it registers a
 * node (`enrolmentToken`), so only hosts that booted the provisioner's own scripts can register.
 * The token is shown once, when the row is made; only its SHA-256 is kept. With `required` on, the
 * site's registrations without it are refused; either way an enrolled registration may pin the
 * node's SSH host key (it comes from a host that holds the site's secret).
 */
/** A site's enrolment: whether it is required, and its token's SHA-256 (the token itself is not kept). */
interface EnrolmentColumns {
	artifactId: string;
	required: boolean;
	tokenSha256: string;
}

export const EnrolmentsService: ServiceSchema = defineService<EntityMethods<EnrolmentColumns>, EntityVars<EnrolmentColumns>>({
	name: "enrolments",
	mixins: [
		entityMixin({
			name: "enrolments",
			fields: {
				artifactId: { type: DataTypes.STRING(253), allowNull: false, unique: true },
				required: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
				tokenSha256: { type: DataTypes.STRING(64), allowNull: false },
			},
			params: { artifactId: ARTIFACT_ID_PARAM, required: { ...BOOLEAN_PARAM, optional: true } },
			hiddenFields: ["tokenSha256"],
		}),
	],
	actions: {
		// A token belongs to its site: to move it, DELETE it and make the other site's.
		update: { params: { artifactId: { type: "forbidden", messages: { forbidden: "The 'artifactId' field cannot change: an enrolment belongs to its site (DELETE it and create another)." } } } },
		create: {
			description: "Make a site's enrolment token; the answer carries the token, shown this once",
			async handler(ctx: Context<{ artifactId: string; required?: boolean }, RequestMeta>) {
				if (await this.adapter.findOne({ where: { artifactId: ctx.params.artifactId } })) {
					throw new ConflictError(`site "${ctx.params.artifactId}" has an enrolment already: DELETE it to make a new token`, { field: "artifactId" });
				}
				const token = `${TOKEN_PREFIX}${randomBytes(24).toString("base64url")}`;
				const row = await this._create(ctx, { artifactId: ctx.params.artifactId, required: ctx.params.required ?? true, tokenSha256: sha256(token).toString("hex") });
				return respondCreated(ctx, { ...row, token }, `/api/enrolments/${row.id}`);
			},
		},
		/** Whether a registration for a site may go ahead, and whether it is enrolled. */
		check: {
			visibility: "public",
			params: { artifactId: "string", token: { type: "string", optional: true, max: 200 } },
			async handler(ctx: Context<{ artifactId: string; token?: string }>): Promise<EnrolmentCheck> {
				const row = await this.adapter.findOne({ where: { artifactId: ctx.params.artifactId } });
				if (!row) return "not-required";
				if (ctx.params.token !== undefined && timingSafeEqual(sha256(ctx.params.token), Buffer.from(row.tokenSha256, "hex"))) return "enrolled";
				return row.required ? "refused" : "not-required";
			},
		},
	},
});
