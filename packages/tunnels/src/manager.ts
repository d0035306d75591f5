import crypto from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import {
	ARTIFACT_ID_PARAM,
	BOOLEAN_PARAM,
	ConfigError,
	ConflictError,
	DataTypes,
	ID_PARAM,
	Op,
	PORT_PARAM,
	Sealer,
	UnavailableError,
	configOf,
	defineService,
	entityMixin,
	parseHostPort,
	respondCreated,
	type EntityJson,
	type EntityMethods,
	type EntityRow,
	type EntityVars,
	type RequestMeta,
} from "@clusterplatform/core";
import { tunnelGrantsMixin, type TunnelGrantsMethods } from "./grants";
import { TUNNELS_CHANGED_EVENT, TUNNEL_CLOSED_EVENT } from "./settings";

export type TunnelStatus = "pending" | "open" | "closed";

export interface TunnelRow {
	id: number;
	artifactId: string;
	target: string;
	remotePort: number;
	public: boolean;
	status: TunnelStatus;
	statusReason: string | null;
	tokenNonce?: string | null;
	tokenHash?: string | null;
	formerTokenHash?: string | null;
}

export type TunnelColumns = Omit<TunnelRow, "id">;

/** A tunnel as the API answers it: with the address it is reached at. */
type PresentedTunnel = EntityJson<TunnelColumns> & { publicUrl: string };

interface TunnelsMethods extends EntityMethods<TunnelColumns>, TunnelGrantsMethods {
	sealer(): Sealer;
	password(nonce: string): string;
	newPassword(): Pick<TunnelRow, "tokenNonce" | "tokenHash">;
	hashClearPasswords(): Promise<void>;
	serverHostKeys(): string[];
	publicHost(): string;
	withPublicUrl<Row extends { remotePort?: number }>(row: Row): Row & { publicUrl: string };
	present(ctx: Context, row: EntityRow<TunnelColumns>): Promise<PresentedTunnel>;
	choosePort(wanted?: number): Promise<number>;
}

/** What a site's tunnel-client needs to open one tunnel (internal: carries the credential). */
export interface TunnelGrant {
	id: number;
	target: string;
	remotePort: number;
	public: boolean;
	token: string;
	sshHost: string;
	sshPort: number;
	/** Host keys (base64 SSH wire format) of the online tunnel-servers; the client accepts no other. */
	hostKeys: string[];
}

const TARGET_PARAM = {
	type: "string",
	max: 300,
	custom: (value: unknown, errors: { type: string; actual: unknown; message?: string }[]) => {
		if (typeof value !== "string") return value;
		try {
			parseHostPort(value, "target");
		} catch (err) {
			errors.push({ type: "target", actual: value, message: `The 'target' field ${(err as Error).message.replace(/^target:?\s*/, "")}` });
		}
		return value;
	},
};

const OPTIONAL_PORT_PARAM = { ...PORT_PARAM, optional: true };

const sha256 = (text: string) => crypto.createHash("sha256").update(text, "utf8").digest("hex");

/** Whether a stored SHA-256 (hex) is the presented password's, compared in constant time. */
function sameHash(stored: string | null | undefined, presentedHash: string): boolean {
	const [a, b] = [Buffer.from(stored ?? "", "hex"), Buffer.from(presentedHash, "hex")];
	return a.length === b.length && b.length > 0 && crypto.timingSafeEqual(a, b);
}

/** Columns the tunnel password is checked and made again from; never listed, sorted or searched by. */
const PASSWORD_COLUMNS = ["tokenNonce", "tokenHash", "formerTokenHash"];

/**
 * /api/tunnels: a site (artifactId) exposes `target` (host:port on its LAN, e.g. the gateway or a
 * node's SSH) on the tunnel-server's `remotePort`. The site's tunnel-client dials out over SSH and
 * asks for that one reverse forward; nothing needs opening at the site. DELETE closes it for good.
 */
export const TunnelsService: ServiceSchema = defineService<TunnelsMethods, EntityVars<TunnelColumns> & { _sealer?: Sealer }>({
	name: "tunnels",
	mixins: [
		tunnelGrantsMixin,
		entityMixin({
			name: "tunnels",
			fields: {
				artifactId: { type: DataTypes.STRING(253), allowNull: false },
				target: { type: DataTypes.STRING(300), allowNull: false },
				remotePort: { type: DataTypes.INTEGER, allowNull: false },
				public: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
				status: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "pending" },
				statusReason: { type: DataTypes.TEXT, allowNull: true },
				// The SSH password of this tunnel's client is not stored: it is derived from SECRETS_KEY and
				// this nonce when a client is handed it, and a login is checked against its SHA-256.
				// (Nullable only so that an older database gains the columns; every row has them.)
				tokenNonce: { type: DataTypes.STRING(64), allowNull: true },
				tokenHash: { type: DataTypes.STRING(64), allowNull: true },
				// SHA-256 of the password an older release issued and kept in the clear: the clients that
				// got it before the upgrade still log in with it.
				formerTokenHash: { type: DataTypes.STRING(64), allowNull: true },
			},
			params: { artifactId: ARTIFACT_ID_PARAM, target: TARGET_PARAM, remotePort: OPTIONAL_PORT_PARAM, public: { ...BOOLEAN_PARAM, optional: true } },
			hiddenFields: PASSWORD_COLUMNS,
		}),
	],
	actions: {
		update: false,
		create: {
			async handler(ctx: Context<{ artifactId: string; target: string; remotePort?: number; public?: boolean }, RequestMeta>) {
				const remotePort = await this.choosePort(ctx.params.remotePort);
				const row = await this.adapter.insert({
					artifactId: ctx.params.artifactId,
					target: ctx.params.target,
					remotePort,
					public: ctx.params.public ?? false,
					status: "pending",
					...this.newPassword(),
				});
				const json = await this.present(ctx, row);
				ctx.broadcast(TUNNELS_CHANGED_EVENT, { artifactId: json.artifactId });
				return respondCreated(ctx, json, `/api/tunnels/${json.id}`);
			},
		},
		list: {
			async handler(ctx: Context<object, RequestMeta>) {
				const page = await this._list(ctx, ctx.params);
				return { ...page, rows: page.rows.map((row) => this.withPublicUrl(row)) };
			},
		},
		get: {
			async handler(ctx: Context<{ id: number }, RequestMeta>) {
				return this.present(ctx, await this.findOrFail(ctx.params.id));
			},
		},
		/** Closes the tunnel: the server drops its forward and client; the row stays, status closed. */
		remove: {
			async handler(ctx: Context<{ id: number }, RequestMeta>) {
				const row = await this.findOrFail(ctx.params.id);
				const updated = await this.adapter.updateById(row.id, { $set: { status: "closed", statusReason: "closed through the API" } });
				const json = await this.present(ctx, updated);
				ctx.broadcast(TUNNEL_CLOSED_EVENT, { id: json.id });
				ctx.broadcast(TUNNELS_CHANGED_EVENT, { artifactId: json.artifactId });
				return json;
			},
		},
		/** A site's live tunnels with their credentials: pushed to its tunnel-clients (grants.ts), never called by a site. */
		siteTunnels: {
			visibility: "public",
			params: { artifactId: ARTIFACT_ID_PARAM },
			handler(ctx: Context<{ artifactId: string }>): Promise<TunnelGrant[]> {
				return this.siteGrants(ctx.params.artifactId);
			},
		},
		/** The tunnel-server asks: may this user/password open a forward, and which one? */
		authorize: {
			visibility: "public",
			params: { id: ID_PARAM, token: { type: "string", max: 200 } },
			async handler(ctx: Context<{ id: number; token: string }>) {
				const found = await this.adapter.findById(ctx.params.id);
				const row = found ? found.get({ plain: true }) : null;
				const presented = sha256(ctx.params.token);
				// Both compared every time: how long a refusal takes says nothing about which hash exists.
				const matches = [sameHash(row?.tokenHash, presented), sameHash(row?.formerTokenHash, presented)];
				if (!row || row.status === "closed" || !matches.includes(true)) return null;
				return { id: row.id, remotePort: row.remotePort, public: row.public };
			},
		},
		/** Status from the tunnel-server (open when the forward listens) or a client (why it cannot). */
		report: {
			visibility: "public",
			params: { id: ID_PARAM, status: { type: "enum", values: ["pending", "open"] }, reason: { type: "string", optional: true, max: 1000 } },
			async handler(ctx: Context<{ id: number; status: TunnelStatus; reason?: string }>) {
				const row = await this.adapter.findById(ctx.params.id);
				if (!row || row.get("status") === "closed") return null;
				await this.adapter.updateById(ctx.params.id, { $set: { status: ctx.params.status, statusReason: ctx.params.reason ?? null } });
				return { id: ctx.params.id, status: ctx.params.status };
			},
		},
	},
	methods: {
		/** A site's live tunnels with their credentials (what its tunnel-client is handed). */
		async siteGrants(artifactId: string): Promise<TunnelGrant[]> {
			const rows = await this.adapter.model.findAll({ where: { artifactId, status: { [Op.ne]: "closed" } }, order: [["id", "ASC"]] });
			const { sshPort } = configOf(this.broker).tunnels;
			const hostKeys = this.serverHostKeys();
			return rows
				.map((r) => r.get({ plain: true }))
				.filter((row) => row.tokenNonce)
				.map((row) => ({ id: row.id, target: row.target, remotePort: row.remotePort, public: row.public, token: this.password(row.tokenNonce!), sshHost: this.publicHost(), sshPort, hostKeys }));
		},
		sealer(): Sealer {
			const config = configOf(this.broker);
			this._sealer ??= Sealer.forDataDir(config.secretsKey, config.dataDir);
			return this._sealer;
		},
		/** A tunnel's SSH password: made again from SECRETS_KEY and the row's nonce whenever a client needs it. */
		password(nonce: string): string {
			return this.sealer().derive(`tunnel-password:${nonce}`);
		},
		/** The columns of a new password: its nonce and its hash, never the password. */
		newPassword(): Pick<TunnelRow, "tokenNonce" | "tokenHash"> {
			const tokenNonce = crypto.randomBytes(32).toString("hex");
			return { tokenNonce, tokenHash: sha256(this.password(tokenNonce)) };
		},
		/**
		 * Releases before this one kept each password in a clear `token` column. Each such row gets a
		 * derived password (handed to clients from now on) and keeps only the old one's hash (clients
		 * running since before the upgrade still log in); then the column is dropped.
		 */
		async hashClearPasswords(): Promise<void> {
			const model = this.adapter.model;
			// A model the adapter has connected always has its Sequelize instance.
			const sequelize = model.sequelize!;
			const queries = sequelize.getQueryInterface();
			const table = model.getTableName();
			if (!("token" in (await queries.describeTable(table)))) return;
			const column = (name: string) => queries.quoteIdentifier(name);
			// Sequelize 6 declares quoteTable on the query interface, but only its query generator has it.
			const generator = queries.queryGenerator as { quoteTable(name: typeof table): string };
			const [rows] = await sequelize.query(`SELECT ${column("id")}, ${column("token")}, ${column("tokenNonce")} FROM ${generator.quoteTable(table)}`);
			for (const { id, token, tokenNonce } of rows as { id: number; token: string; tokenNonce: string | null }[]) {
				// A row an interrupted start already gave a nonce keeps it: its clients may have that password.
				const current = tokenNonce ? { tokenNonce, tokenHash: sha256(this.password(tokenNonce)) } : this.newPassword();
				await model.update({ ...current, formerTokenHash: sha256(token) }, { where: { id } });
			}
			try {
				await queries.removeColumn(table, "token");
			} catch (err) {
				throw new ConfigError(`tunnels: cannot drop the column "token" that held passwords in the clear (${(err as Error).message}): drop it by hand`);
			}
			this.logger.info(`tunnels: ${rows.length} password(s) an older release kept in the clear are now hashed; the column is dropped`);
		},
		serverHostKeys(): string[] {
			const services = this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true, withActions: false });
			return [...new Set<string>(services.filter((s) => s.name === "tunnel-server" && typeof s.metadata?.hostKey === "string").map((s) => String(s.metadata.hostKey)))];
		},
		publicHost(): string {
			const config = configOf(this.broker);
			return config.tunnels.publicHost ?? new URL(config.publicUrl).hostname;
		},
		withPublicUrl<Row extends { remotePort?: number }>(row: Row) {
			const host = this.publicHost();
			return { ...row, publicUrl: `tcp://${host.includes(":") ? `[${host}]` : host}:${row.remotePort}` };
		},
		async present(ctx: Context, row: EntityRow<TunnelColumns>) {
			return this.withPublicUrl(await this.transformDocuments(ctx, {}, row));
		},
		/** The asked port if no open tunnel holds it, else the first free one of the range. */
		async choosePort(wanted?: number): Promise<number> {
			const taken = new Set<number>((await this.adapter.model.findAll({ where: { status: { [Op.ne]: "closed" } }, attributes: ["remotePort"] })).map((r) => r.get("remotePort")));
			if (wanted !== undefined) {
				if (taken.has(wanted)) throw new ConflictError(`remotePort ${wanted} is used by another tunnel`, { field: "remotePort" });
				return wanted;
			}
			const [from, to] = configOf(this.broker).tunnels.portRange;
			for (let port = from; port <= to; port++) if (!taken.has(port)) return port;
			throw new UnavailableError(`every remote port of TUNNEL_PORT_RANGE ${from}-${to} is in use`, { field: "remotePort" });
		},
	},
	async started() {
		await this.hashClearPasswords();
	},
});
