import type { Context, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import type { Model, ModelStatic, Sequelize, Transaction } from "sequelize";
import {
	ARTIFACT_ID_PARAM,
	BOOLEAN_PARAM,
	BootEventRecorder,
	ConflictError,
	DataTypes,
	ID_PARAM,
	InvalidInputError,
	Op,
	RateLimiter,
	Sealer,
	UnavailableError,
	configOf,
	entityMixin,
	invalid,
	respondCreated,
	respondText,
	type FieldProblem,
	type RequestMeta,
} from "@clusterplatform/core";
import { BOOT_PARAMS, TOKEN_PLACEHOLDER, bootPathMethods, missingMessage, sha256 } from "./boot";
import { embeddedChain, unknownMachineScript, type UnknownBoot } from "./boot-scripts";
import { parseCsv } from "./csv";
import {
	CLEARABLE,
	LABEL_KEY,
	MACHINE_PARAMS,
	MACHINE_STATUSES,
	MAC_PARAM,
	SAFE_TEXT,
	checkBmc,
	defaultBmcPort,
	normalizeMac,
	normalizeUuid,
	type MachineStatus,
} from "./fields";
import type { ProfileRow } from "./profiles";
import type { Selection } from "./selectors";
import { Provisioning, BULK_MAX, type BootDevice, type PowerAction } from "./provisioning";
import { SCRIPT_URLS, bareObject, missingValues, render, type TemplateField } from "./templates";

export interface MachineRow {
	id: number;
	name: string;
	macs: string[];
	uuid: string | null;
	serial: string | null;
	manufacturer: string | null;
	product: string | null;
	arch: string | null;
	firmware: string | null;
	artifactId: string | null;
	labels: Record<string, string>;
	hostname: string | null;
	bmcProtocol: string | null;
	bmcAddress: string | null;
	bmcPort: number | null;
	bmcUser: string | null;
	bmcPassword?: string | null;
	bmcCipherSuite: number | null;
	bmcCertificateSha256: string | null;
	status: MachineStatus;
	statusReason: string | null;
	lastSeen: Date | null;
	localnodeId: number | null;
	/** A profile pinned on this machine (by a provision request or an operator): selectors are then not asked. */
	profileId: number | null;
	/** What went wrong but did not stop the last provisioning (e.g. a BMC that refused the boot device). */
	warning: string | null;
	provisionStartedAt: Date | null;
	/** A machine still `provisioning` after this becomes `failed` (provisioning.ts). */
	provisionDeadline: Date | null;
}

export type MachineMeta = RequestMeta & { remoteAddress?: string; caller?: unknown };

/**
 * Moleculer's own action timeout (its timeout middleware reads it; the type lacks it): a power or
 * provision call may take two BMC calls of up to 65 s each; a bulk one, every machine's turn.
 */
const BMC_ROUTE_TIMEOUT = { timeout: 150_000 };
const BULK_ROUTE_TIMEOUT = { timeout: 30 * 60_000 };
/** Most MACs `siteMacs` answers for one site (a list a distributor's dnsmasq reads on every change). */
const SITE_MACS_MAX = 100_000;
/** Most machines one import takes (all or nothing, in one transaction). */
export const IMPORT_MAX = 10_000;
/** Rows written per statement: far below SQLite's bound on variables per statement. */
const WRITE_CHUNK = 200;
/** New machines one address may make known by booting: a burst, then one a second. */
const DISCOVERY_BURST = 60;
const DISCOVERY_PER_SECOND = 1;

/**
 * /api/machines: the inventory. A machine is known by its MACs (unique across machines), SMBIOS
 * UUID and serial before it first boots; `GET /api/boot?mac=…` (the machine path) answers its
 * profile's rendered iPXE script, and records a MAC it does not know as a `discovered` machine.
 * BMC passwords are sealed (SECRETS_KEY) and never leave the service except to its own callers
 * (`bmcCredentials`). MACs and labels also live in tables of their own (machinemacs,
 * machinelabels), indexed for the boot path and the searches.
 */
export const MachinesService: ServiceSchema = {
	name: "machines",
	mixins: [
		entityMixin({
			name: "machines",
			fields: {
				name: { type: DataTypes.STRING(253), allowNull: false, unique: true },
				/** The MACs in one string, for lists and substring search; machinemacs holds them one per row (unique). */
				macs: {
					type: DataTypes.STRING(16 * 18),
					allowNull: false,
					get(this: Model) {
						const value = this.getDataValue("macs") as string | null;
						return value ? value.split(" ") : [];
					},
				},
				uuid: { type: DataTypes.STRING(36), allowNull: true },
				serial: { type: DataTypes.STRING(128), allowNull: true },
				manufacturer: { type: DataTypes.STRING(128), allowNull: true },
				product: { type: DataTypes.STRING(128), allowNull: true },
				arch: { type: DataTypes.STRING(8), allowNull: true },
				firmware: { type: DataTypes.STRING(8), allowNull: true },
				artifactId: { type: DataTypes.STRING(253), allowNull: true },
				labels: { type: DataTypes.JSON, allowNull: false, defaultValue: {} },
				hostname: { type: DataTypes.STRING(253), allowNull: true },
				bmcProtocol: { type: DataTypes.STRING(8), allowNull: true },
				bmcAddress: { type: DataTypes.STRING(253), allowNull: true },
				bmcPort: { type: DataTypes.INTEGER, allowNull: true },
				bmcUser: { type: DataTypes.STRING(64), allowNull: true },
				bmcPassword: { type: DataTypes.TEXT, allowNull: true },
				bmcCipherSuite: { type: DataTypes.INTEGER, allowNull: true },
				bmcCertificateSha256: { type: DataTypes.STRING(95), allowNull: true },
				status: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "unknown" },
				statusReason: { type: DataTypes.STRING(500), allowNull: true },
				lastSeen: { type: DataTypes.DATE, allowNull: true },
				localnodeId: { type: DataTypes.INTEGER, allowNull: true },
				profileId: { type: DataTypes.INTEGER, allowNull: true },
				warning: { type: DataTypes.STRING(500), allowNull: true },
				provisionStartedAt: { type: DataTypes.DATE, allowNull: true },
				provisionDeadline: { type: DataTypes.DATE, allowNull: true },
				/** SHA-256 of the registration token the last post-boot script carried; cleared when used. */
				registrationTokenSha256: { type: DataTypes.STRING(64), allowNull: true, unique: true },
			},
			params: MACHINE_PARAMS,
			hiddenFields: ["bmcPassword", "registrationTokenSha256"],
			// Lists by site and status, the plan's lookups by UUID, the link to a localnode; substring
			// search on names and MACs on PostgreSQL (trigrams, see core/db.ts).
			modelOptions: {
				indexes: [
					{ name: "machines_site", fields: ["artifactId", "id"] },
					{ name: "machines_status", fields: ["status", "id"] },
					{ name: "machines_uuid", fields: ["uuid"] },
					{ name: "machines_localnode", fields: ["localnodeId"] },
					// The provisioning sweep's question: which provisioning machines are overdue.
					{ name: "machines_provision_deadline", fields: ["status", "provisionDeadline"] },
					{ name: "machines_name_search", fields: ["name"], using: "gin", operator: "gin_trgm_ops" },
					{ name: "machines_macs_search", fields: ["macs"], using: "gin", operator: "gin_trgm_ops" },
				],
			},
		}),
	],
	settings: { discoveryBurst: DISCOVERY_BURST, discoveryPerSecond: DISCOVERY_PER_SECOND },
	hooks: {
		before: {
			list(this: any, ctx: Context<Record<string, any>>) {
				ctx.params.query = this.listFilter(ctx.params);
				for (const name of ["mac", "label", "status", "artifactId"]) delete ctx.params[name];
			},
		},
	},
	actions: {
		list: {
			description: "Machines; filter by mac (exact), label (key or key=value), artifactId (site) and status",
			params: {
				mac: { ...MAC_PARAM, optional: true },
				label: { type: "string", max: 320, optional: true },
				artifactId: { ...ARTIFACT_ID_PARAM, optional: true },
				status: { type: "enum", values: [...MACHINE_STATUSES], optional: true },
			},
		},
		create: {
			description: "Add a machine: name and macs (unique across machines), SMBIOS uuid, serial, manufacturer, product, arch, firmware, artifactId (site), labels, hostname, BMC (bmcProtocol ipmi|redfish, bmcAddress, bmcPort, bmcUser, bmcPassword — sealed, never shown; bmcCipherSuite for IPMI, bmcCertificateSha256 to pin a Redfish certificate), profileId (a pinned profile)",
			async handler(this: any, ctx: Context<Record<string, unknown>, RequestMeta>) {
				const stored = this.storedMachine(ctx.params, "");
				await this.checkPinnedProfiles(ctx, [stored], [""]);
				const [id] = await this.writeNew([stored], "");
				const json = await this.transformDocuments(ctx, {}, await this.findOrFail(id));
				await this.entityChanged("created", json, ctx);
				this.siteChanged(json.artifactId);
				return respondCreated(ctx, json, `/api/machines/${id}`);
			},
		},
		update: {
			async handler(this: any, ctx: Context<Record<string, unknown> & { id: number }>) {
				const current: MachineRow = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				const { id, ...params } = ctx.params;
				const changes = this.storedChanges(params, current);
				await this.checkPinnedProfiles(ctx, [changes], [""]);
				await this.conflictsOf([{ ...current, ...changes, id }], "");
				await this.transaction(async (transaction: Transaction) => {
					await this.adapter.model.update(changes, { where: { id }, transaction });
					if (changes.macs !== undefined) await this.replaceMacs(id, changes.macs.split(" "), transaction);
					if (changes.labels !== undefined) await this.replaceLabels(id, changes.labels, transaction);
				});
				const json = await this.transformDocuments(ctx, {}, await this.findOrFail(id));
				await this.entityChanged("updated", json, ctx);
				this.siteChanged(current.artifactId, json.artifactId);
				return json;
			},
		},
		remove: {
			async handler(this: any, ctx: Context<{ id: number }>) {
				const json = await this.transformDocuments(ctx, {}, await this.findOrFail(ctx.params.id));
				await this.transaction(async (transaction: Transaction) => {
					await this.sideTables.macs.destroy({ where: { machineId: ctx.params.id }, transaction });
					await this.sideTables.labels.destroy({ where: { machineId: ctx.params.id }, transaction });
					await this.adapter.model.destroy({ where: { id: ctx.params.id }, transaction });
				});
				await this.entityChanged("removed", json, ctx);
				this.siteChanged(json.artifactId);
				return json;
			},
		},
		import: {
			rest: "POST /import",
			description: `Add many machines at once, all or nothing: {"machines": [{…as POST /api/machines…}]} or {"csv": "name,macs,…\\n…"} (a header line naming the fields; macs separated by spaces or ';', labels as key=value;key=value). At most ${IMPORT_MAX}; one bad row is a 422 naming the row and field, and nothing is written`,
			params: {
				machines: { type: "array", max: IMPORT_MAX, items: "object", optional: true },
				csv: { type: "string", max: 16 * 1024 * 1024, optional: true },
				$$strict: true,
			},
			async handler(this: any, ctx: Context<{ machines?: Record<string, unknown>[]; csv?: string }, RequestMeta>) {
				const rows = this.importRows(ctx.params);
				const stored = rows.map(({ row, label }: { row: Record<string, unknown>; label: string }) => this.storedMachine(this.checkedImportRow(row, label), label));
				const duplicate = firstDuplicate(stored.map((m: { name: string }) => m.name));
				if (duplicate !== null) invalid(`${rows[duplicate].label}.name`, `"${stored[duplicate].name}" is named by an earlier row too`);
				await this.checkPinnedProfiles(ctx, stored, rows.map((r: { label: string }) => r.label));
				const ids: number[] = await this.writeNew(stored, rows.map((r: { label: string }) => r.label));
				this.broker.broadcast("cache.clean.machines");
				this.siteChanged(...stored.map((m: { artifactId?: string }) => m.artifactId));
				return respondCreated(ctx, { created: ids.length, ids }, "/api/machines");
			},
		},
		plan: {
			rest: "GET /:id/plan",
			description: "What the machine would boot now, before it boots: the profile, the selector that matched and why, and the rendered scripts (the post-boot script's registration token is made only when the machine fetches it)",
			params: { id: ID_PARAM, $$strict: true },
			async handler(this: any, ctx: Context<{ id: number }>) {
				const machine: MachineRow = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				return this.planOf(ctx, machine);
			},
		},
		boot: {
			rest: { method: "GET", basePath: "/boot", path: "/" },
			description: `The machine path's boot answer (text/plain iPXE): every machine's embedded script chains it — ${embeddedChain("http://<provisioner>")}. A known machine gets its profile's rendered iPXE script; an unknown MAC is recorded as discovered and gets the operator's default (MACHINES_UNKNOWN_BOOT: local, menu or none). Without a mac, the answer is that chain line as a script (for an embedded script or a mainscript to chain)`,
			params: BOOT_PARAMS,
			async handler(this: any, ctx: Context<Record<string, string>, MachineMeta>) {
				if (ctx.params.mac === undefined) return respondText(ctx, `#!ipxe\n${embeddedChain(configOf(this.broker).publicUrl)}\n`);
				return respondText(ctx, await this.bootAnswer(ctx));
			},
		},
		bootKickstart: {
			rest: { method: "GET", basePath: "/boot", path: "/:mac/kickstart" },
			description: "The machine's rendered kickstart (machine path), by its MAC",
			params: { mac: MAC_PARAM, $$strict: true },
			handler(this: any, ctx: Context<{ mac: string }, MachineMeta>) {
				return this.scriptAnswer(ctx, "kickstart");
			},
		},
		bootPreboot: {
			rest: { method: "GET", basePath: "/boot", path: "/:mac/preboot" },
			description: "The machine's rendered pre-boot script (machine path), by its MAC",
			params: { mac: MAC_PARAM, $$strict: true },
			handler(this: any, ctx: Context<{ mac: string }, MachineMeta>) {
				return this.scriptAnswer(ctx, "preboot");
			},
		},
		bootPostboot: {
			rest: { method: "GET", basePath: "/boot", path: "/:mac/postboot" },
			description: "The machine's rendered post-boot script (machine path), by its MAC; it carries a new single-use registration token each time",
			params: { mac: MAC_PARAM, $$strict: true },
			handler(this: any, ctx: Context<{ mac: string }, MachineMeta>) {
				return this.scriptAnswer(ctx, "postboot");
			},
		},
		power: {
			rest: "PUT /:id/power",
			description: "Power through the machine's BMC, from its site's distributor: on, off, cycle (a machine that is off is powered on) or status. Answers the power state the BMC reports after the action. A machine without a BMC is a 422 naming bmc; no online distributor for its site a 503 naming the site; a BMC that does not answer or refuses a 502 naming the BMC (data.reason), never its password",
			params: { id: ID_PARAM, action: { type: "enum", values: ["on", "off", "cycle", "status"] }, $$strict: true },
			...BMC_ROUTE_TIMEOUT,
			handler(this: any, ctx: Context<{ id: number; action: PowerAction }>) {
				return this.provisioning.power(ctx, ctx.params.id, ctx.params.action);
			},
		},
		bootdev: {
			rest: "PUT /:id/bootdev",
			description: "The machine's boot device through its BMC: pxe, disk or cdrom, for the next boot only unless persistent. A BMC that refuses the device answers 502 with data.reason \"boot-device-refused\", naming the BMC",
			params: { id: ID_PARAM, device: { type: "enum", values: ["pxe", "disk", "cdrom"] }, persistent: { ...BOOLEAN_PARAM, optional: true, default: false }, $$strict: true },
			...BMC_ROUTE_TIMEOUT,
			handler(this: any, ctx: Context<{ id: number; device: BootDevice; persistent: boolean }>) {
				return this.provisioning.bootDevice(ctx, ctx.params.id, ctx.params.device, ctx.params.persistent);
			},
		},
		provision: {
			rest: "POST /:id/provision",
			description:
				"One call from power-off to a registered node: sets the next boot to PXE through the machine's BMC, power-cycles it and answers the machine, now provisioning (202). Its status then follows the boot timeline (statusReason: the last step seen — script fetched, post-boot script fetched) to ready when the node registers with its token, or failed when it has not registered within MACHINES_PROVISION_TIMEOUT seconds, naming the last step seen. A BMC that refuses the boot device does not stop it: the machine is power-cycled anyway and boots by its own boot order (put the network first), and the machine's warning says so. profile pins that profile on the machine (the plan and /api/boot then use it, not the selectors; PUT profileId 0 unpins). No BMC: 422 naming bmc; no online distributor for its site: 503 naming the site; a BMC error after the boot device: 502, the machine failed",
			params: { id: ID_PARAM, profile: { ...ID_PARAM, optional: true }, $$strict: true },
			...BMC_ROUTE_TIMEOUT,
			async handler(this: any, ctx: Context<{ id: number; profile?: number }, RequestMeta>) {
				const machine = await this.provisioning.provision(ctx, ctx.params.id, ctx.params.profile);
				ctx.meta.$statusCode = 202;
				return machine;
			},
		},
		provisionMany: {
			rest: "POST /provision",
			description: `Provision several machines (each as POST /api/machines/:id/provision), at most MACHINES_PROVISION_CONCURRENCY at once; at most ${BULK_MAX} per call. Answers when every machine has been power-cycled or refused: {concurrency, results: [{id, status: 202 and the machine, or the error's status and error}]}`,
			params: { ids: { type: "array", min: 1, max: BULK_MAX, items: ID_PARAM }, profile: { ...ID_PARAM, optional: true }, $$strict: true },
			...BULK_ROUTE_TIMEOUT,
			handler(this: any, ctx: Context<{ ids: number[]; profile?: number }>) {
				return this.provisioning.provisionMany(ctx, ctx.params.ids, ctx.params.profile);
			},
		},
		/**
		 * Called by localnodes before a registration writes anything: a machine token must be right and
		 * unused (it is used up here); without one, the registration is anonymous (allowed unless
		 * ANONYMOUS_REGISTRATION=false) and may name a MAC to link by. What to link after, or null.
		 */
		admitRegistration: {
			visibility: "public",
			params: { token: { type: "string", max: 200, optional: true }, mac: { type: "string", max: 64, optional: true }, operator: BOOLEAN_PARAM },
			async handler(this: any, ctx: Context<{ token?: string; mac?: string; operator: boolean }>) {
				if (ctx.params.token !== undefined) return { machineId: await this.useToken(ctx.params.token) };
				if (!ctx.params.operator && !configOf(this.broker).machines.anonymousRegistration) {
					throw tokenRefused("is required: this provisioner registers only machines it booted (ANONYMOUS_REGISTRATION=false)");
				}
				if (ctx.params.mac === undefined) return null;
				const mac = normalizeMac(ctx.params.mac);
				if (!mac) invalid("mac", "must be a MAC address like aa:bb:cc:dd:ee:ff");
				return { mac };
			},
		},
		/** After a registration: the machine (by its used token, else by MAC) becomes the node, and ready. */
		linkLocalnode: {
			visibility: "public",
			params: { localnodeId: ID_PARAM, machineId: { ...ID_PARAM, optional: true }, mac: { type: "string", optional: true } },
			async handler(this: any, ctx: Context<{ localnodeId: number; machineId?: number; mac?: string }>) {
				const id = ctx.params.machineId ?? (ctx.params.mac ? await this.machineIdByMac(ctx.params.mac) : null);
				if (!id) return null;
				const row: MachineRow | null = (await this.adapter.findById(id))?.get({ plain: true }) ?? null;
				if (!row) return null;
				// A MAC is no proof (anyone on the LAN can say one): it never moves a machine already linked to another node.
				if (ctx.params.machineId === undefined && row.localnodeId !== null && row.localnodeId !== ctx.params.localnodeId) return null;
				await this.setStatusOf(row.id, "ready", `registered as localnode ${ctx.params.localnodeId}${ctx.params.machineId ? " with its token" : " by MAC"}`, { localnodeId: ctx.params.localnodeId, lastSeen: new Date() });
				return { machineId: row.id };
			},
		},
		/** The machine with this MAC, for selectors (two MACs of one machine) and other services. */
		idByMac: {
			visibility: "public",
			params: { mac: "string" },
			handler(this: any, ctx: Context<{ mac: string }>) {
				return this.machineIdByMac(ctx.params.mac);
			},
		},
		/** A machine's status with its reason, for the services that follow it (power, provisioning). */
		setStatus: {
			visibility: "public",
			params: { id: ID_PARAM, status: { type: "enum", values: [...MACHINE_STATUSES] }, reason: { type: "string", max: 500, optional: true } },
			async handler(this: any, ctx: Context<{ id: number; status: MachineStatus; reason?: string }>) {
				await this.findOrFail(ctx.params.id);
				await this.setStatusOf(ctx.params.id, ctx.params.status, ctx.params.reason ?? null);
				return this.transformDocuments(ctx, {}, await this.findOrFail(ctx.params.id));
			},
		},
		/**
		 * The MACs (lower-case) of a site's machines, for a distributor that answers PXE only for known
		 * machines; discovered ones are not known until an operator adopts them. At most SITE_MACS_MAX.
		 */
		siteMacs: {
			visibility: "public",
			params: { artifactId: ARTIFACT_ID_PARAM },
			async handler(this: any, ctx: Context<{ artifactId: string }>): Promise<string[]> {
				const rows: { macs: string }[] = await this.adapter.model.findAll({ attributes: ["macs"], where: { artifactId: ctx.params.artifactId, status: { [Op.ne]: "discovered" } }, order: [["id", "ASC"]], limit: SITE_MACS_MAX, raw: true });
				return rows.flatMap((row) => row.macs.split(" ")).filter(Boolean).slice(0, SITE_MACS_MAX);
			},
		},
		/** The BMC with its password in the clear, for the service that talks to it; never published. */
		bmcCredentials: {
			visibility: "public",
			params: { id: ID_PARAM },
			async handler(this: any, ctx: Context<{ id: number }>) {
				const row: MachineRow = (await this.findOrFail(ctx.params.id)).get({ plain: true });
				if (!row.bmcProtocol || !row.bmcAddress) invalid("bmcAddress", `machine ${row.id} has no BMC: set bmcProtocol and bmcAddress`);
				return {
					protocol: row.bmcProtocol,
					address: row.bmcAddress,
					port: row.bmcPort ?? defaultBmcPort(row.bmcProtocol),
					user: row.bmcUser,
					password: row.bmcPassword ? this.sealer().open(row.bmcPassword) : null,
				};
			},
		},
	},
	methods: {
		...bootPathMethods,
		/** Tells the distributors of these sites that their known MACs may have changed (known-machines-only mode). */
		siteChanged(this: any, ...artifactIds: (string | null | undefined)[]): void {
			for (const artifactId of new Set(artifactIds)) if (typeof artifactId === "string" && artifactId) void this.broker.emit("machines.changed", { artifactId });
		},
		sealer(this: any): Sealer {
			const config = configOf(this.broker);
			this._sealer ??= Sealer.forDataDir(config.secretsKey, config.dataDir);
			return this._sealer;
		},
		/** Run `work` in one transaction; SQLite's is IMMEDIATE, so two writers queue instead of failing. */
		async transaction(this: any, work: (t: Transaction) => Promise<unknown>) {
			const sequelize: Sequelize = this.adapter.model.sequelize;
			try {
				return await sequelize.transaction({ type: "IMMEDIATE" as Transaction.TYPES }, work);
			} catch (err) {
				if ((err as Error).name !== "SequelizeUniqueConstraintError") throw err;
				// Lost a race to another writer: what it took is named as the pre-check would have.
				const fields = Object.keys((err as { fields?: Record<string, unknown> }).fields ?? {});
				throw new ConflictError(`another machine took the same ${fields.join(" and ") || "name or MAC"} meanwhile`, { fields });
			}
		},
		/** The machine's fields as stored, from a create or import row (already validated). */
		storedMachine(this: any, params: Record<string, unknown>, label: string): Record<string, unknown> {
			const row: Record<string, unknown> = {};
			for (const name of Object.keys(MACHINE_PARAMS)) if (params[name] !== undefined && params[name] !== "") row[name] = params[name];
			const macs = [...new Set((params.macs as string[]).map((m) => normalizeMac(m)!))];
			row.macs = macs.join(" ");
			if (row.uuid) row.uuid = normalizeUuid(row.uuid as string);
			row.labels = row.labels ?? {};
			if (row.profileId === 0) delete row.profileId;
			try {
				checkBmc(row);
			} catch (err) {
				throw prefixed(err, label);
			}
			if (row.bmcPassword) row.bmcPassword = this.sealer().seal(row.bmcPassword as string);
			return row;
		},
		/** An update's changes as stored: "" clears a field, a new password is sealed, the BMC stays whole. */
		storedChanges(this: any, params: Record<string, unknown>, current: MachineRow): Record<string, any> {
			const changes: Record<string, any> = {};
			for (const [name, value] of Object.entries(params)) {
				if (value === undefined || !(name in MACHINE_PARAMS)) continue;
				changes[name] = value === "" && (CLEARABLE as readonly string[]).includes(name) ? null : value;
			}
			if (Array.isArray(changes.macs)) changes.macs = [...new Set((changes.macs as string[]).map((m) => normalizeMac(m)!))].join(" ");
			if (changes.uuid) changes.uuid = normalizeUuid(changes.uuid);
			if (changes.profileId === 0) changes.profileId = null;
			// An operator's status other than provisioning ends what provisioning was waiting for.
			if (changes.status !== undefined && changes.status !== "provisioning") changes.provisionDeadline = null;
			checkBmc({ ...current, ...changes });
			if (changes.bmcPassword) changes.bmcPassword = this.sealer().seal(changes.bmcPassword);
			return changes;
		},
		/** 422 naming the row whose pinned profile does not exist (one lookup per distinct profile). */
		async checkPinnedProfiles(this: any, ctx: Context, rows: { profileId?: number | null }[], labels: string[]): Promise<void> {
			const checked = new Map<number, boolean>();
			for (const [index, row] of rows.entries()) {
				if (!row.profileId) continue;
				if (!checked.has(row.profileId)) checked.set(row.profileId, Boolean(await ctx.call("profiles.byId", { id: row.profileId })));
				if (!checked.get(row.profileId)) invalid(labels[index] ? `${labels[index]}.profileId` : "profileId", `profile ${row.profileId} does not exist`);
			}
		},
		/** 409 naming the row, field and value a name or MAC is taken by (by another machine, or an earlier row). */
		async conflictsOf(this: any, machines: { id?: number; name: string; macs: string | string[] }[], labels: string | string[]): Promise<void> {
			const labelOf = (index: number) => (Array.isArray(labels) ? `${labels[index]}.` : "");
			const seen = new Map<string, number>();
			machines.forEach((machine, index) => {
				for (const mac of macList(machine.macs)) {
					const earlier = seen.get(mac);
					if (earlier !== undefined && earlier !== index) invalid(`${labelOf(index)}macs`, `${mac} is a MAC of an earlier row too (${labelOf(earlier).slice(0, -1)})`);
					seen.set(mac, index);
				}
			});
			for (let at = 0; at < machines.length; at += WRITE_CHUNK) {
				const chunk = machines.slice(at, at + WRITE_CHUNK);
				const macs = chunk.flatMap((m) => macList(m.macs));
				const taken: { mac: string; machineId: number }[] = await this.sideTables.macs.findAll({ where: { mac: { [Op.in]: macs } }, raw: true });
				for (const { mac, machineId } of taken) {
					const index = machines.findIndex((m) => macList(m.macs).includes(mac));
					if (machines[index]!.id !== machineId) throw new ConflictError(`${labelOf(index)}macs: ${mac} is a MAC of machine ${machineId} already`, { field: `${labelOf(index)}macs`, mac, machineId });
				}
				const names: { id: number; name: string }[] = await this.adapter.model.findAll({ where: { name: { [Op.in]: chunk.map((m) => m.name) } }, attributes: ["id", "name"], raw: true });
				for (const { id, name } of names) {
					const index = machines.findIndex((m) => m.name === name);
					if (machines[index]!.id !== id) throw new ConflictError(`${labelOf(index)}name: machine ${id} is named "${name}" already`, { field: `${labelOf(index)}name`, machineId: id });
				}
			}
		},
		/** Write new machines with their MACs and labels in one transaction; their ids, in order. */
		async writeNew(this: any, machines: Record<string, any>[], labels: string | string[]): Promise<number[]> {
			await this.conflictsOf(machines, labels);
			return this.transaction(async (transaction: Transaction) => {
				const ids: number[] = [];
				for (let at = 0; at < machines.length; at += WRITE_CHUNK) {
					const chunk = machines.slice(at, at + WRITE_CHUNK);
					await this.adapter.model.bulkCreate(chunk, { transaction });
					// bulkCreate's ids are not reliable on SQLite: the names (unique) find them.
					const made: { id: number; name: string }[] = await this.adapter.model.findAll({ where: { name: { [Op.in]: chunk.map((m) => m.name) } }, attributes: ["id", "name"], raw: true, transaction });
					const idOf = new Map(made.map((m) => [m.name, m.id]));
					const chunkIds = chunk.map((m) => idOf.get(m.name)!);
					ids.push(...chunkIds);
					await this.sideTables.macs.bulkCreate(chunk.flatMap((m, i) => macList(m.macs).map((mac) => ({ mac, machineId: chunkIds[i] }))), { transaction });
					await this.sideTables.labels.bulkCreate(chunk.flatMap((m, i) => Object.entries(m.labels ?? {}).map(([key, value]) => ({ machineId: chunkIds[i], key, value }))), { transaction });
				}
				return ids;
			});
		},
		async replaceMacs(this: any, id: number, macs: string[], transaction: Transaction) {
			await this.sideTables.macs.destroy({ where: { machineId: id }, transaction });
			await this.sideTables.macs.bulkCreate(macs.map((mac) => ({ mac, machineId: id })), { transaction });
		},
		async replaceLabels(this: any, id: number, labels: Record<string, string>, transaction: Transaction) {
			await this.sideTables.labels.destroy({ where: { machineId: id }, transaction });
			await this.sideTables.labels.bulkCreate(Object.entries(labels).map(([key, value]) => ({ machineId: id, key, value })), { transaction });
		},
		/** An import's rows, each with the label its errors name (machines[3], or csv line 4). */
		importRows(this: any, params: { machines?: Record<string, unknown>[]; csv?: string }): { row: Record<string, unknown>; label: string }[] {
			if ((params.machines === undefined) === (params.csv === undefined)) invalid("machines", 'send either "machines" (a JSON array) or "csv" (CSV text)');
			if (params.machines) return params.machines.map((row, index) => ({ row, label: `machines[${index}]` }));
			let parsed: ReturnType<typeof parseCsv>;
			try {
				parsed = parseCsv(params.csv!, IMPORT_MAX);
			} catch (err) {
				return invalid("csv", (err as Error).message);
			}
			for (const column of parsed.header) if (!(column in MACHINE_PARAMS)) invalid("csv", `names a column "${column.slice(0, 40)}", which is no machine field (${Object.keys(MACHINE_PARAMS).join(", ")})`);
			return parsed.records.map(({ line, cells }) => ({ row: csvMachine(cells, `csv line ${line}`), label: `csv line ${line}` }));
		},
		/** One import row through the same rules as POST /api/machines; a problem names the row. */
		checkedImportRow(this: any, row: Record<string, unknown>, label: string): Record<string, unknown> {
			this.importCheck ??= this.broker.validator.compile({ ...MACHINE_PARAMS, $$strict: true });
			const copy = { ...row };
			const result = this.importCheck(copy);
			if (result === true) return copy;
			const problems: FieldProblem[] = (result as { field?: string; message?: string; type?: string; actual?: unknown; expected?: unknown }[]).map((p) => ({
				field: `${label}.${p.type === "objectStrict" ? String(p.actual) : (p.field ?? "")}`,
				message: p.type === "objectStrict" ? "is not a machine field" : (p.message ?? "is invalid").replace(/^The '([^']+)' field /, ""),
			}));
			throw new InvalidInputError(problems);
		},
		listFilter(this: any, params: { mac?: string; label?: string; status?: string; artifactId?: string; query?: object }): object | undefined {
			const and: object[] = [];
			if (params.status) and.push({ status: params.status });
			if (params.artifactId) and.push({ artifactId: params.artifactId });
			if (params.mac) {
				const mac = normalizeMac(params.mac)!;
				and.push({ id: { [Op.in]: this.subquery(`SELECT "machineId" FROM "machinemacs" WHERE "mac" = :first`, mac) } });
			}
			if (params.label) {
				const [key, ...rest] = params.label.split("=");
				if (!LABEL_KEY.test(key!)) invalid("label", "must be key or key=value, the key of letters, digits, '_' or '-'");
				const value = rest.length ? rest.join("=") : null;
				if (value !== null && !SAFE_TEXT.test(value)) invalid("label", "has a value no label can hold");
				and.push({ id: { [Op.in]: this.subquery(`SELECT "machineId" FROM "machinelabels" WHERE "key" = :first${value === null ? "" : ` AND "value" = :second`}`, key, value) } });
			}
			return and.length ? { [Op.and]: and } : undefined;
		},
		/** A literal subquery with its values escaped by the database's own quoting. */
		subquery(this: any, sql: string, first: string, second?: string | null) {
			const sequelize: Sequelize = this.adapter.model.sequelize;
			const text = sql.replace(":first", sequelize.escape(first)).replace(":second", sequelize.escape(second ?? ""));
			return sequelize.literal(`(${text})`);
		},
		async machineIdByMac(this: any, value: string): Promise<number | null> {
			const mac = normalizeMac(value);
			if (!mac) return null;
			const row = await this.sideTables.macs.findOne({ where: { mac }, raw: true });
			return row ? row.machineId : null;
		},
		async machineByMac(this: any, mac: string): Promise<MachineRow | null> {
			const id = await this.machineIdByMac(mac);
			if (!id) return null;
			const row = await this.adapter.model.findByPk(id);
			return row ? row.get({ plain: true }) : null;
		},
		async setStatusOf(this: any, id: number, status: MachineStatus, reason: string | null, more: Record<string, unknown> = {}) {
			// Only a provisioning machine has a deadline to meet.
			const deadline = status === "provisioning" ? {} : { provisionDeadline: null };
			await this.adapter.model.update({ status, statusReason: reason?.slice(0, 500) ?? null, ...deadline, ...more }, { where: { id } });
			this.broker.broadcast("cache.clean.machines");
		},
		/** The machine's profile now: the winning selector and its profile, or why there is none. */
		async selectionOf(this: any, ctx: Context, machine: MachineRow): Promise<{ selection: Selection | null; profile: ProfileRow } | { why: string }> {
			if (machine.status === "discovered") return { why: "discovered, not adopted: an operator adopts it by setting its status (PUT /api/machines/:id {status: \"unknown\"})" };
			if (machine.profileId) {
				const pinned: ProfileRow | null = await ctx.call("profiles.byId", { id: machine.profileId });
				return pinned ? { selection: null, profile: pinned } : { why: `its pinned profile ${machine.profileId} is gone` };
			}
			const facts = { macs: machine.macs, uuid: machine.uuid, artifactId: machine.artifactId, arch: machine.arch, firmware: machine.firmware, labels: machine.labels ?? {} };
			const selection: Selection | null = await ctx.call("selectors.match", { machine: facts });
			if (!selection) return { why: "no selector matches it" };
			const profile: ProfileRow | null = await ctx.call("profiles.byId", { id: selection.selector.profileId });
			if (!profile) return { why: `selector "${selection.selector.name}" names profile ${selection.selector.profileId}, which is gone` };
			return { selection, profile };
		},
		/** The values a machine's templates see (no prototype: a template finds only these). */
		viewOf(this: any, machine: MachineRow, mac: string, profile: ProfileRow, token: string | null): Record<string, unknown> {
			const baseUrl: string = configOf(this.broker).publicUrl;
			// A normalized MAC (hex digits and colons) is URL-safe as it is, and the machine path matches it so.
			const urls: Record<string, string | undefined> = {};
			for (const [name, field] of Object.entries(SCRIPT_URLS)) urls[name] = profile[field] ? `${baseUrl}/api/boot/${mac}/${name.replace(/Url$/, "")}` : undefined;
			return bareObject({
				...profile.variables,
				id: machine.id,
				name: machine.name,
				mac,
				macs: machine.macs.join(" "),
				uuid: machine.uuid,
				serial: machine.serial,
				manufacturer: machine.manufacturer,
				product: machine.product,
				arch: machine.arch,
				firmware: machine.firmware,
				artifactId: machine.artifactId,
				hostname: machine.hostname,
				labels: bareObject(machine.labels ?? {}),
				baseUrl,
				bootUrl: `${baseUrl}/api/boot?mac=${mac}`,
				...urls,
				registrationToken: token,
				registerUrl: token && machine.artifactId ? `${baseUrl}/api/localnodes?artifactId=${encodeURIComponent(machine.artifactId)}&mac=${mac}&machineToken=${encodeURIComponent(token)}` : undefined,
			});
		},
		/** One script of the profile for the machine: its text, or the values the machine lacks for it. */
		renderedScript(this: any, profile: ProfileRow, field: TemplateField, view: Record<string, unknown>): { text: string } | { missing: string[] } {
			if (field === "ipxeScript" && !profile.ipxeScript) {
				const [registry, id] = profile.mainscriptId ? ["mainscripts", profile.mainscriptId] : ["subscripts", profile.subscriptId];
				return { text: `#!ipxe\nchain ${configOf(this.broker).publicUrl}/api/${registry}/${id}\n` };
			}
			const template = profile[field]!;
			const missing = missingValues(template, view);
			return missing.length ? { missing } : { text: render(template, view) };
		},
		async planOf(this: any, ctx: Context, machine: MachineRow) {
			const chosen = await this.selectionOf(ctx, machine).catch((err: Error) => {
				if (err.name === "ServiceNotFoundError") throw new UnavailableError(`cannot plan: ${err.message}`);
				throw err;
			});
			const summary = { id: machine.id, name: machine.name, status: machine.status, statusReason: machine.statusReason };
			const mac = machine.macs[0]!;
			if ("why" in chosen) {
				const choice: UnknownBoot = configOf(this.broker).machines.unknownBoot;
				return { machine: summary, profile: null, selector: null, why: `${chosen.why}: it gets the default for machines without a profile (MACHINES_UNKNOWN_BOOT=${choice})`, scripts: { ipxe: unknownMachineScript(choice, mac, configOf(this.broker).publicUrl, chosen.why) }, problems: [] };
			}
			const { selection, profile } = chosen;
			const view = this.viewOf(machine, mac, profile, TOKEN_PLACEHOLDER);
			const why = selection
				? `selector "${selection.selector.name}" matches on ${selection.matchedOn.join(", ") || "everything (it names nothing)"}; specificity ${selection.selector.ranks.join(", ")} (identity, labels, site, hardware) is the highest of the ${selection.matching} selector(s) that match`
				: `profile ${profile.id} is pinned on the machine (profileId, set by a provision request or an operator): selectors are not asked`;
			const scripts: Record<string, string> = {};
			const problems: { script: string; missing: string[]; message: string }[] = [];
			for (const [name, field] of [["ipxe", "ipxeScript"], ["kickstart", "kickstart"], ["preboot", "prebootScript"], ["postboot", "postbootScript"]] as const) {
				if (field !== "ipxeScript" && !profile[field]) continue;
				const result = this.renderedScript(profile, field, view);
				if ("text" in result) scripts[name] = result.text;
				else problems.push({ script: name, missing: result.missing, message: missingMessage(machine, profile, field, result.missing) });
			}
			return {
				machine: summary,
				profile: { id: profile.id, name: profile.name },
				selector: selection ? { id: selection.selector.id, name: selection.selector.name, ranks: selection.selector.ranks, matchedOn: selection.matchedOn } : null,
				why,
				scripts,
				problems,
			};
		},
		/** The machine a token was made for; used up here, so it registers once. */
		async useToken(this: any, token: string): Promise<number> {
			const hash = sha256(token);
			const row = await this.adapter.model.findOne({ where: { registrationTokenSha256: hash }, attributes: ["id"], raw: true });
			if (!row) throw tokenRefused("is not a machine's current registration token (wrong, or used already)");
			const [changed] = await this.adapter.model.update({ registrationTokenSha256: null }, { where: { id: row.id, registrationTokenSha256: hash } });
			// Another registration used it between the two statements.
			if (changed !== 1) throw tokenRefused("is not a machine's current registration token (wrong, or used already)");
			return row.id;
		},
	},
	created(this: any) {
		this.discoveries = new RateLimiter(this.settings.discoveryBurst, this.settings.discoveryPerSecond);
		// As the gateway's boot trail: a client adds a boot's worth of steps, then one a second.
		this.stepsPerClient = new RateLimiter(60, 1);
		this.bootEvents = new BootEventRecorder(this.broker);
		const { provisionTimeoutMs, provisionConcurrency } = configOf(this.broker).machines;
		// A few looks per timeout: a short test timeout is noticed soon, a long one costs a query every 5 s.
		const sweepMs = Math.min(5000, Math.max(200, Math.floor(provisionTimeoutMs / 4)));
		const service = this;
		this.provisioning = new Provisioning(
			{
				broker: this.broker,
				logger: this.logger,
				get model() {
					return service.adapter.model;
				},
				machine: async (id: number) => (await this.findOrFail(id)).get({ plain: true }),
				shown: async (ctx: Context, id: number) => this.transformDocuments(ctx, {}, await this.findOrFail(id)),
				password: (row: MachineRow) => (row.bmcPassword ? this.sealer().open(row.bmcPassword) : null),
				setStatus: (id: number, status: MachineStatus, reason: string | null, more?: Record<string, unknown>) => this.setStatusOf(id, status, reason, more),
			},
			{ timeoutMs: provisionTimeoutMs, concurrency: provisionConcurrency, sweepMs },
		);
	},
	async started(this: any) {
		this.sideTables = await defineSideTables(this.adapter.model.sequelize);
		await this.provisioning.start();
	},
	async stopped(this: any) {
		await this.provisioning?.stop();
		await this.bootEvents?.stop();
	},
};

/** machinemacs (a MAC belongs to one machine) and machinelabels (key/value per machine), beside the machines table. */
async function defineSideTables(sequelize: Sequelize): Promise<{ macs: ModelStatic<Model>; labels: ModelStatic<Model> }> {
	const machineId = { type: DataTypes.INTEGER, allowNull: false, references: { model: "machines", key: "id" }, onDelete: "CASCADE" };
	const macs =
		sequelize.models.machinemacs ??
		sequelize.define("machinemacs", { mac: { type: DataTypes.STRING(17), primaryKey: true }, machineId }, { tableName: "machinemacs", timestamps: false, indexes: [{ name: "machinemacs_machine", fields: ["machineId"] }] });
	const labels =
		sequelize.models.machinelabels ??
		sequelize.define(
			"machinelabels",
			{ machineId: { ...machineId, primaryKey: true }, key: { type: DataTypes.STRING(63), primaryKey: true }, value: { type: DataTypes.STRING(253), allowNull: false } },
			{ tableName: "machinelabels", timestamps: false, indexes: [{ name: "machinelabels_key_value", fields: ["key", "value", "machineId"] }] },
		);
	await macs.sync();
	await labels.sync();
	return { macs, labels };
}

function macList(macs: string | string[]): string[] {
	return Array.isArray(macs) ? macs : macs.split(" ").filter(Boolean);
}

function firstDuplicate(values: string[]): number | null {
	const seen = new Set<string>();
	for (let index = 0; index < values.length; index++) {
		if (seen.has(values[index]!)) return index;
		seen.add(values[index]!);
	}
	return null;
}

/** A validation error's fields prefixed with the import row they belong to. */
function prefixed(err: unknown, label: string): unknown {
	if (!label || !(err instanceof InvalidInputError)) return err;
	return new InvalidInputError((err.data as FieldProblem[]).map((p) => ({ ...p, field: `${label}.${p.field}` })));
}

/** A CSV record as a machine: macs split on spaces or ';', labels "k=v;k=v", bmcPort a number. */
function csvMachine(cells: Record<string, string>, label: string): Record<string, unknown> {
	const row: Record<string, unknown> = { ...cells };
	if (cells.macs !== undefined) row.macs = cells.macs.split(/[\s;|]+/).filter(Boolean);
	if (cells.labels !== undefined) {
		const labels: Record<string, string> = {};
		for (const pair of cells.labels.split(";").filter((p) => p.trim())) {
			const at = pair.indexOf("=");
			if (at < 1) invalid(`${label}.labels`, `"${pair.slice(0, 40)}" is not key=value`);
			labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
		}
		row.labels = labels;
	}
	return row;
}


function tokenRefused(message: string): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(`machineToken ${message}`, 401, "MACHINE_TOKEN_REFUSED", [{ field: "machineToken", message }]);
}
