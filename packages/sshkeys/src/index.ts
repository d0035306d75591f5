import type { Context, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import {
	ARTIFACT_ID_PARAM,
	BOOLEAN_PARAM,
	configOf,
	DataTypes,
	defineService,
	ID_PARAM,
	invalid,
	NotFoundError,
	respondText,
	Sealer,
	textRegistryMixin,
	wantsJson,
	type Caller,
	type EntityMethods,
	type EntityVars,
	type RequestMeta,
} from "@clusterplatform/core";

const PUBLIC_KEY = /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?\r?\n?$/;
const PRIVATE_KEY = /^-----BEGIN (OPENSSH|RSA|EC|DSA|ENCRYPTED)? ?PRIVATE KEY-----\r?\n[\s\S]+\r?\n-----END (OPENSSH|RSA|EC|DSA|ENCRYPTED)? ?PRIVATE KEY-----\r?\n?$/;

interface KeyRow {
	id: number;
	text?: string;
	private: boolean;
	artifactId: string;
}

type KeyMeta = RequestMeta & { caller?: Caller | null };

type KeyColumns = Omit<KeyRow, "id">;

interface SshkeysMethods extends EntityMethods<KeyColumns> {
	sealer(): Sealer;
	openKey(row: KeyRow): string;
	storedText(text: string, isPrivate: boolean): string;
}

/** Private keys go only to a caller with a token that may change things (or to other services). */
function assertMayReadPrivate(ctx: Context<unknown, KeyMeta>): void {
	if (!ctx.meta.caller || ctx.meta.caller.readOnly) {
		throw new Errors.MoleculerClientError("private keys need an admin token", 403, "FORBIDDEN", { field: "id" });
	}
}

/**
 * /api/sshkeys: SSH keys by site (artifactId). Public keys go to nodes' authorized_keys and are
 * readable by booting hosts; private keys let a distributor reach its nodes: sealed at rest
 * (AES-256-GCM, SECRETS_KEY), on create and update alike, never in lists, never echoed back, never
 * searched or sorted by, readable only with an admin token. Whether a key is private never changes.
 */
export const SshkeysService: ServiceSchema = defineService<SshkeysMethods, EntityVars<KeyColumns> & { _sealer?: Sealer }>({
	name: "sshkeys",
	mixins: [
		textRegistryMixin("sshkeys", {
			fields: {
				artifactId: { type: DataTypes.STRING(253), allowNull: false },
				private: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
			},
			params: { artifactId: ARTIFACT_ID_PARAM, private: { ...BOOLEAN_PARAM, default: false } },
			// A private key's text (sealed or not) is no one's to sort or search by.
			secretFields: ["text"],
		}),
	],
	actions: {
		get: {
			async handler(ctx: Context<{ id: number }, KeyMeta>) {
				const row: KeyRow = (await this.findOrFail(ctx.params.id)).get();
				if (row.private) assertMayReadPrivate(ctx);
				const text = this.openKey(row);
				return wantsJson(ctx) ? { ...row, text } : respondText(ctx, text);
			},
		},
		/** A site's private key in the clear, for the services that run scripts on its nodes. */
		privateKey: {
			visibility: "public",
			params: { id: { ...ID_PARAM, optional: true }, artifactId: { ...ARTIFACT_ID_PARAM, optional: true } },
			async handler(ctx: Context<{ id?: number; artifactId?: string }>) {
				const where = ctx.params.id !== undefined ? { id: ctx.params.id, private: true } : { artifactId: ctx.params.artifactId, private: true };
				const [row] = await this.adapter.model.findAll({ where, order: [["id", "DESC"]], limit: 1 });
				if (!row) throw new NotFoundError("private sshkey", ctx.params.id ?? ctx.params.artifactId);
				return { id: row.id, artifactId: row.artifactId, text: this.openKey(row.get()) };
			},
		},
	},
	methods: {
		sealer(): Sealer {
			const config = configOf(this.broker);
			this._sealer ??= Sealer.forDataDir(config.secretsKey, config.dataDir);
			return this._sealer;
		},
		openKey(row: KeyRow): string {
			return row.private && row.text && Sealer.isSealed(row.text) ? this.sealer().open(row.text) : (row.text ?? "");
		},
		/** The text to store: a key of the row's kind, sealed when private; else a 422 naming `text`. */
		storedText(text: string, isPrivate: boolean): string {
			if (isPrivate && !PRIVATE_KEY.test(text)) invalid("text", "is not a PEM/OpenSSH private key (-----BEGIN … PRIVATE KEY-----)");
			if (!isPrivate && !PUBLIC_KEY.test(text)) invalid("text", "is not an OpenSSH public key line (e.g. \"ssh-ed25519 AAAA… comment\")");
			return isPrivate ? this.sealer().seal(text) : text;
		},
	},
	hooks: {
		before: {
			create(ctx: Context<{ text: string; private: boolean }>) {
				ctx.params.text = this.storedText(ctx.params.text, ctx.params.private);
			},
			/**
			 * Same checks and sealing as create. A key stays what it was created as: turning a private
			 * key public would hand it to anyone, turning a public one private would hide it from nodes.
			 */
			async update(ctx: Context<{ id: number; text?: string; private?: boolean }>) {
				const row: KeyRow = (await this.findOrFail(ctx.params.id)).get();
				if (ctx.params.private !== undefined && ctx.params.private !== row.private) {
					invalid("private", `cannot change (this key is ${row.private ? "private" : "public"}): add a new key and delete this one`);
				}
				if (ctx.params.text !== undefined && ctx.params.text !== null) ctx.params.text = this.storedText(ctx.params.text, row.private);
			},
		},
		after: {
			create(_ctx: Context, row: KeyRow) {
				return withoutPrivateText(row);
			},
			update(_ctx: Context, row: KeyRow) {
				return withoutPrivateText(row);
			},
			list(_ctx: Context, page: { rows: KeyRow[] }) {
				page.rows = page.rows.map(withoutPrivateText);
				return page;
			},
		},
	},
});

function withoutPrivateText(row: KeyRow): KeyRow {
	if (!row.private) return row;
	const { text: _sealed, ...rest } = row;
	return rest;
}

export default SshkeysService;
