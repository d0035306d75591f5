import type { Context, Service, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import { Op, type Model, type ModelStatic } from "sequelize";
import {
	ARTIFACT_ID_PARAM,
	BOOLEAN_PARAM,
	BootEventRecorder,
	DataTypes,
	ID_PARAM,
	RateLimiter,
	Sealer,
	configOf,
	defineService,
	entityMixin,
	invalid,
	respondCreated,
	respondText,
	type BootEventKind,
	type EntityJson,
	type EntityMethods,
	type EntityVars,
	type RequestMeta,
} from "@clusterplatform/core";
import { BOOT_PARAMS, SEEN_BATCH_MAX, bootPathMethods, sha256, type BootFacts } from "./boot";
import { embeddedChain } from "./boot-scripts";
import { MACHINE_PARAMS, MACHINE_STATUSES, MAC_PARAM, normalizeMac, type MachineStatus } from "./fields";
import { IMPORT_MAX, checkedImportRow, firstDuplicate, importRowCheck, importRows, type ImportParams } from "./import";
import { Inventory, type ListFilter, type StoredMachine } from "./inventory";
import { planOf, renderedScript, selectionOf, viewOf, type Chosen } from "./plan";
import type { ProfileRow } from "./profiles";
import { Provisioning, BULK_MAX, type BootDevice, type PowerAction } from "./provisioning";
import { storedChanges, storedMachine } from "./stored";
import type { TemplateField } from "./templates";

export { IMPORT_MAX } from "./import";

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
/** New machines one address may make known by booting: a burst, then one a second. */
const DISCOVERY_BURST = 60;
const DISCOVERY_PER_SECOND = 1;
/** New machines all addresses together may make known (many addresses, or an attacker's many): a wave's burst, then ten a second. */
const DISCOVERY_ALL_BURST = 600;
const DISCOVERY_ALL_PER_SECOND = 10;

/**
 * /api/machines: the inventory. A machine is known by its MACs (unique across machines), SMBIOS
 * UUID and serial before it first boots; `GET /api/boot?mac=…` (the machine path) answers its
 * profile's rendered iPXE script, and records a MAC it does not know as a `discovered` machine.
 * BMC passwords are sealed (SECRETS_KEY) and leave the service only to the distributor of the
 * machine's site that drives its BMC (provisioning.ts). MACs and labels also live in tables of their own (machinemacs,
 * machinelabels), indexed for the boot path and the searches.
 */
/** The columns as read (the macs getter splits the stored string). */
type MachineColumns = Omit<MachineRow, "id"> & { registrationTokenSha256: string | null };

interface MachinesSettings {
	discoveryBurst: number;
	discoveryPerSecond: number;
	discoveryAllBurst: number;
	discoveryAllPerSecond: number;
}

interface MachinesVars extends EntityVars<MachineColumns> {
	inventory: Inventory;
	provisioning: Provisioning;
	/** New machines per address the boot path records (boot.ts). */
	discoveries: RateLimiter;
	/** New machines the boot path records, all addresses together (one key). */
	discoveriesAll: RateLimiter;
	/** When "MACHINES_DISCOVERED_MAX reached" was last logged (once a minute at most). */
	discoveryFullLoggedAt: number;
	/** Boot steps per client the boot path records (boot.ts). */
	stepsPerClient: RateLimiter;
	bootEvents: BootEventRecorder;
	importCheck?: ReturnType<typeof importRowCheck>;
	_sealer?: Sealer;
}

/** The boot path's methods (boot.ts). */
interface BootPathMethods {
	bootAnswer(ctx: Context<Record<string, string>, MachineMeta>): Promise<string>;
	scriptAnswer(ctx: Context<{ mac: string }, MachineMeta>, kind: "kickstart" | "preboot" | "postboot"): Promise<string>;
	bootFailed(ctx: Context<unknown, MachineMeta>, machine: MachineRow, mac: string, reason: string, kind: string): Promise<string>;
	discover(ctx: Context<unknown, MachineMeta>, mac: string, facts: BootFacts): Promise<MachineRow | null>;
	roomToDiscover(): Promise<boolean>;
	seen(machine: MachineRow, facts: BootFacts): Promise<void>;
	markSeen(macs: string[]): Promise<number>;
	newToken(id: number): Promise<string | null>;
	noTokenNow(ctx: Context<unknown, MachineMeta>, machine: MachineRow): string;
	recordStep(ctx: Context<unknown, MachineMeta>, mac: string, kind: BootEventKind, detail: string): void;
}

interface MachinesMethods extends EntityMethods<MachineColumns>, BootPathMethods {
	// This file's, some for the boot path.
	siteChanged(...artifactIds: (string | null | undefined)[]): void;
	sealer(): Sealer;
	machine(id: number): Promise<MachineRow>;
	shown(ctx: Context, id: number): Promise<EntityJson<MachineColumns>>;
	checkPinnedProfiles(ctx: Context, rows: Record<string, unknown>[], labels: string[]): Promise<void>;
	writeNew(machines: StoredMachine[], labels: string | string[]): Promise<number[]>;
	machineIdByMac(mac: string): Promise<number | null>;
	machineByMac(mac: string): Promise<MachineRow | null>;
	setStatusOf(id: number, status: MachineStatus, reason: string | null, more?: Record<string, unknown>, from?: MachineStatus): Promise<boolean>;
	provisioningBegins(from: MachineStatus, to: MachineStatus | undefined): Record<string, unknown>;
	selectionOf(ctx: Context, machine: MachineRow): Promise<Chosen>;
	viewOf(machine: MachineRow, mac: string, profile: ProfileRow, token: string | null): Record<string, unknown>;
	renderedScript(profile: ProfileRow, field: TemplateField, view: Record<string, unknown>): { text: string } | { missing: string[] };
	tokenMachine(token: string): Promise<MachineRow>;
}

/** `this` in the machines service's handlers, and in boot.ts's methods. */
export type MachinesThis = Service<MachinesSettings> & MachinesVars & MachinesMethods;

export const MachinesService: ServiceSchema = defineService<MachinesMethods, MachinesVars, MachinesSettings>({
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
	settings: { discoveryBurst: DISCOVERY_BURST, discoveryPerSecond: DISCOVERY_PER_SECOND, discoveryAllBurst: DISCOVERY_ALL_BURST, discoveryAllPerSecond: DISCOVERY_ALL_PER_SECOND },
	hooks: {
		before: {
			list(ctx: Context<ListFilter & { query?: object }>) {
				ctx.params.query = this.inventory.listFilter(ctx.params);
				for (const name of ["mac", "label", "status", "artifactId"] as const) delete ctx.params[name];
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
			async handler(ctx: Context<Record<string, unknown>, RequestMeta>) {
				const stored = storedMachine(ctx.params, "", (text) => this.sealer().seal(text));
				await this.checkPinnedProfiles(ctx, [stored], [""]);
				const [id] = await this.writeNew([stored], "");
				const json = await this.shown(ctx, id!);
				await this.entityChanged("created", json, ctx);
				this.siteChanged(json.artifactId);
				return respondCreated(ctx, json, `/api/machines/${id}`);
			},
		},
		update: {
			async handler(ctx: Context<Record<string, unknown> & { id: number }>) {
				const current = await this.machine(ctx.params.id);
				const { id, ...params } = ctx.params;
				const changes: Record<string, unknown> = storedChanges(params, current, (text) => this.sealer().seal(text));
				Object.assign(changes, this.provisioningBegins(current.status, changes.status as MachineStatus | undefined));
				await this.checkPinnedProfiles(ctx, [changes], [""]);
				await this.inventory.conflictsOf([{ ...current, ...changes, id }], "");
				await this.inventory.update(id, changes);
				const json = await this.shown(ctx, id);
				await this.entityChanged("updated", json, ctx);
				this.siteChanged(current.artifactId, json.artifactId);
				return json;
			},
		},
		remove: {
			async handler(ctx: Context<{ id: number }>) {
				const json = await this.shown(ctx, ctx.params.id);
				await this.inventory.remove(ctx.params.id);
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
			async handler(ctx: Context<ImportParams, RequestMeta>) {
				const rows = importRows(ctx.params);
				this.importCheck ??= importRowCheck(this.broker);
				const check = this.importCheck;
				const stored = rows.map(({ row, label }) => storedMachine(checkedImportRow(check, row, label), label, (text) => this.sealer().seal(text)));
				const duplicate = firstDuplicate(stored.map((m) => m.name));
				if (duplicate !== null) invalid(`${rows[duplicate]!.label}.name`, `"${stored[duplicate]!.name}" is named by an earlier row too`);
				const labels = rows.map((r) => r.label);
				await this.checkPinnedProfiles(ctx, stored, labels);
				const ids = await this.writeNew(stored, labels);
				this.broker.broadcast("cache.clean.machines");
				this.siteChanged(...stored.map((m) => m.artifactId));
				return respondCreated(ctx, { created: ids.length, ids }, "/api/machines");
			},
		},
		plan: {
			rest: "GET /:id/plan",
			description: "What the machine would boot now, before it boots: the profile, the selector that matched and why, and the rendered scripts (the post-boot script's registration token is made only when the machine fetches it)",
			params: { id: ID_PARAM, $$strict: true },
			async handler(ctx: Context<{ id: number }>) {
				const { publicUrl, machines } = configOf(this.broker);
				return planOf(ctx, await this.machine(ctx.params.id), { publicUrl, unknownBoot: machines.unknownBoot });
			},
		},
		boot: {
			rest: { method: "GET", basePath: "/boot", path: "/" },
			description: `The machine path's boot answer (text/plain iPXE): every machine's embedded script chains it — ${embeddedChain("http://<provisioner>")}. A known machine gets its profile's rendered iPXE script; what a boot reports (serial, manufacturer, product, uuid, arch, firmware) never changes a known machine. An unknown MAC is recorded as discovered (at most MACHINES_DISCOVERED_MAX; its reported text kept only in letters, digits and . _ : -, others as _, at most 64 characters) and gets the operator's default (MACHINES_UNKNOWN_BOOT: local, menu or none). Without a mac, the answer is that chain line as a script (for an embedded script or a mainscript to chain)`,
			params: BOOT_PARAMS,
			async handler(ctx: Context<Record<string, string>, MachineMeta>) {
				if (ctx.params.mac === undefined) return respondText(ctx, `#!ipxe\n${embeddedChain(configOf(this.broker).publicUrl)}\n`);
				return respondText(ctx, await this.bootAnswer(ctx));
			},
		},
		bootKickstart: {
			rest: { method: "GET", basePath: "/boot", path: "/:mac/kickstart" },
			description: "The machine's rendered kickstart (machine path), by its MAC",
			params: { mac: MAC_PARAM, $$strict: true },
			handler(ctx: Context<{ mac: string }, MachineMeta>) {
				return this.scriptAnswer(ctx, "kickstart");
			},
		},
		bootPreboot: {
			rest: { method: "GET", basePath: "/boot", path: "/:mac/preboot" },
			description: "The machine's rendered pre-boot script (machine path), by its MAC",
			params: { mac: MAC_PARAM, $$strict: true },
			handler(ctx: Context<{ mac: string }, MachineMeta>) {
				return this.scriptAnswer(ctx, "preboot");
			},
		},
		bootPostboot: {
			rest: { method: "GET", basePath: "/boot", path: "/:mac/postboot" },
			description: "The machine's rendered post-boot script (machine path), by its MAC; while the machine is provisioning it carries a new single-use registration token each time, good until the provisioning deadline and for the machine's site only. A machine not provisioning gets 409 and a script saying why (no token)",
			params: { mac: MAC_PARAM, $$strict: true },
			handler(ctx: Context<{ mac: string }, MachineMeta>) {
				return this.scriptAnswer(ctx, "postboot");
			},
		},
		power: {
			rest: "PUT /:id/power",
			description: "Power through the machine's BMC, from its site's distributor: on, off, cycle (a machine that is off is powered on) or status. Answers the power state the BMC reports after the action. A machine without a BMC is a 422 naming bmc; no online distributor for its site a 503 naming the site; a BMC that does not answer or refuses a 502 naming the BMC (data.reason), never its password",
			params: { id: ID_PARAM, action: { type: "enum", values: ["on", "off", "cycle", "status"] }, $$strict: true },
			...BMC_ROUTE_TIMEOUT,
			handler(ctx: Context<{ id: number; action: PowerAction }>) {
				return this.provisioning.power(ctx, ctx.params.id, ctx.params.action);
			},
		},
		bootdev: {
			rest: "PUT /:id/bootdev",
			description: "The machine's boot device through its BMC: pxe, disk or cdrom, for the next boot only unless persistent. A BMC that refuses the device answers 502 with data.reason \"boot-device-refused\", naming the BMC",
			params: { id: ID_PARAM, device: { type: "enum", values: ["pxe", "disk", "cdrom"] }, persistent: { ...BOOLEAN_PARAM, optional: true, default: false }, $$strict: true },
			...BMC_ROUTE_TIMEOUT,
			handler(ctx: Context<{ id: number; device: BootDevice; persistent: boolean }>) {
				return this.provisioning.bootDevice(ctx, ctx.params.id, ctx.params.device, ctx.params.persistent);
			},
		},
		provision: {
			rest: "POST /:id/provision",
			description:
				"One call from power-off to a registered node: sets the next boot to PXE through the machine's BMC, power-cycles it and answers the machine, now provisioning (202). Its status then follows the boot timeline (statusReason: the last step seen — script fetched, post-boot script fetched) to ready when the node registers with its token, or failed when it has not registered within MACHINES_PROVISION_TIMEOUT seconds, naming the last step seen. A BMC that refuses the boot device does not stop it: the machine is power-cycled anyway and boots by its own boot order (put the network first), and the machine's warning says so. profile pins that profile on the machine (the plan and /api/boot then use it, not the selectors; PUT profileId 0 unpins). No BMC: 422 naming bmc; no online distributor for its site: 503 naming the site; a BMC error after the boot device: 502, the machine failed",
			params: { id: ID_PARAM, profile: { ...ID_PARAM, optional: true }, $$strict: true },
			...BMC_ROUTE_TIMEOUT,
			async handler(ctx: Context<{ id: number; profile?: number }, RequestMeta>) {
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
			handler(ctx: Context<{ ids: number[]; profile?: number }>) {
				return this.provisioning.provisionMany(ctx, ctx.params.ids, ctx.params.profile);
			},
		},
		/**
		 * Called by localnodes before a registration writes anything: a machine token must be the
		 * machine's current one, the machine provisioning and within its deadline, and the
		 * registration for the machine's site when it has one (409 naming artifactId). The token is
		 * not used up here (a registration the handler then refuses keeps it): linkLocalnode uses
		 * it, after the node is written. Without a token, the registration is anonymous (allowed
		 * unless ANONYMOUS_REGISTRATION=false) and may name a MAC to link by. What to link after, or null.
		 */
		admitRegistration: {
			visibility: "public",
			params: { token: { type: "string", max: 200, optional: true }, mac: { type: "string", max: 64, optional: true }, artifactId: { type: "string", optional: true }, operator: BOOLEAN_PARAM },
			async handler(ctx: Context<{ token?: string; mac?: string; artifactId?: string; operator: boolean }>) {
				if (ctx.params.token !== undefined) {
					const machine = await this.tokenMachine(ctx.params.token);
					if (machine.artifactId && machine.artifactId !== ctx.params.artifactId) throw siteRefused(machine);
					return { machineId: machine.id, tokenSha256: sha256(ctx.params.token) };
				}
				if (!ctx.params.operator && !configOf(this.broker).machines.anonymousRegistration) {
					throw tokenRefused("is required: this provisioner registers only machines it booted (ANONYMOUS_REGISTRATION=false)");
				}
				if (ctx.params.mac === undefined) return null;
				const mac = normalizeMac(ctx.params.mac);
				if (!mac) invalid("mac", "must be a MAC address like aa:bb:cc:dd:ee:ff");
				return { mac };
			},
		},
		/**
		 * After a registration. With the token admitRegistration checked: it is used up and the
		 * machine becomes the node and ready, in one conditional UPDATE (still provisioning, within
		 * its deadline, the token still its own: two registrations with one token link once). By MAC
		 * (no proof: anyone on the LAN can say one) the node is only linked, to a machine that has no
		 * node yet and is not discovered; its status stays as it is: ready comes only with the token.
		 */
		linkLocalnode: {
			visibility: "public",
			params: { localnodeId: ID_PARAM, machineId: { ...ID_PARAM, optional: true }, tokenSha256: { type: "string", length: 64, optional: true }, mac: { type: "string", optional: true } },
			async handler(ctx: Context<{ localnodeId: number; machineId?: number; tokenSha256?: string; mac?: string }>) {
				const { localnodeId, machineId, tokenSha256 } = ctx.params;
				if (machineId !== undefined && tokenSha256 !== undefined) {
					const reason = `registered as localnode ${localnodeId} with its token`;
					const [changed] = await this.adapter.model.update(
						{ status: "ready", statusReason: reason, provisionDeadline: null, registrationTokenSha256: null, localnodeId, lastSeen: new Date() },
						{ where: { id: machineId, status: "provisioning", registrationTokenSha256: tokenSha256, provisionDeadline: { [Op.gt]: new Date() } } },
					);
					if (changed !== 1) throw tokenRefused("was used by another registration, or its machine stopped provisioning, after this registration was admitted");
					this.broker.broadcast("cache.clean.machines");
					return { machineId };
				}
				const id = ctx.params.mac ? await this.machineIdByMac(ctx.params.mac) : null;
				if (!id) return null;
				const [changed] = await this.adapter.model.update(
					{ localnodeId, lastSeen: new Date() },
					{ where: { id, status: { [Op.ne]: "discovered" }, [Op.or]: [{ localnodeId: null }, { localnodeId }] } },
				);
				return changed === 1 ? { machineId: id } : null;
			},
		},
		/** The machine with this MAC, for selectors (two MACs of one machine) and other services. */
		idByMac: {
			visibility: "public",
			params: { mac: "string" },
			handler(ctx: Context<{ mac: string }>) {
				return this.machineIdByMac(ctx.params.mac);
			},
		},
		/** lastSeen of the machines whose boots the gateway answered from memory (boot.ts markSeen). */
		bootsSeen: {
			visibility: "public",
			params: { macs: { type: "array", items: "string", max: SEEN_BATCH_MAX }, $$strict: true },
			handler(ctx: Context<{ macs: string[] }>) {
				return this.markSeen(ctx.params.macs);
			},
		},
		/** A machine's status with its reason, for the services that follow it (power, provisioning). */
		setStatus: {
			visibility: "public",
			params: { id: ID_PARAM, status: { type: "enum", values: [...MACHINE_STATUSES] }, reason: { type: "string", max: 500, optional: true } },
			async handler(ctx: Context<{ id: number; status: MachineStatus; reason?: string }>) {
				const current = await this.machine(ctx.params.id);
				await this.setStatusOf(ctx.params.id, ctx.params.status, ctx.params.reason ?? null, this.provisioningBegins(current.status, ctx.params.status));
				return this.shown(ctx, ctx.params.id);
			},
		},
		/**
		 * The MACs (lower-case) of a site's machines, for a distributor that answers PXE only for known
		 * machines; discovered ones are not known until an operator adopts them. At most SITE_MACS_MAX.
		 */
		siteMacs: {
			visibility: "public",
			params: { artifactId: ARTIFACT_ID_PARAM },
			handler(ctx: Context<{ artifactId: string }>): Promise<string[]> {
				return this.inventory.siteMacs(ctx.params.artifactId);
			},
		},
	},
	methods: {
		...bootPathMethods,
		/** Tells the distributors of these sites that their known MACs may have changed (known-machines-only mode). */
		siteChanged(...artifactIds: (string | null | undefined)[]): void {
			for (const artifactId of new Set(artifactIds)) if (typeof artifactId === "string" && artifactId) void this.broker.emit("machines.changed", { artifactId });
		},
		sealer(): Sealer {
			const config = configOf(this.broker);
			this._sealer ??= Sealer.forDataDir(config.secretsKey, config.dataDir);
			return this._sealer;
		},
		/** The stored row (404 when there is none). */
		async machine(id: number): Promise<MachineRow> {
			return (await this.findOrFail(id)).get({ plain: true });
		},
		/** The row as the API shows it (no secrets). */
		async shown(ctx: Context, id: number) {
			return this.transformDocuments(ctx, {}, await this.findOrFail(id));
		},
		/** 422 naming the row whose pinned profile does not exist (one lookup per distinct profile). */
		async checkPinnedProfiles(ctx: Context, rows: Record<string, unknown>[], labels: string[]): Promise<void> {
			const checked = new Map<number, boolean>();
			for (const [index, row] of rows.entries()) {
				if (typeof row.profileId !== "number" || !row.profileId) continue;
				if (!checked.has(row.profileId)) checked.set(row.profileId, Boolean(await ctx.call("profiles.byId", { id: row.profileId })));
				if (!checked.get(row.profileId)) invalid(labels[index] ? `${labels[index]}.profileId` : "profileId", `profile ${row.profileId} does not exist`);
			}
		},
		writeNew(machines: StoredMachine[], labels: string | string[]): Promise<number[]> {
			return this.inventory.writeNew(machines, labels);
		},
		machineIdByMac(mac: string): Promise<number | null> {
			return this.inventory.machineIdByMac(mac);
		},
		async machineByMac(mac: string): Promise<MachineRow | null> {
			const id = await this.machineIdByMac(mac);
			if (!id) return null;
			const row = await this.adapter.model.findByPk(id);
			return row ? row.get({ plain: true }) : null;
		},
		/**
		 * The machine's status and reason; with `from`, only if it still has the status its caller
		 * read (the boot path: a registration or an operator in between wins). True when written.
		 */
		async setStatusOf(id: number, status: MachineStatus, reason: string | null, more: Record<string, unknown> = {}, from?: MachineStatus): Promise<boolean> {
			// Only a provisioning machine has a deadline to meet, and a registration token to use.
			const ended = status === "provisioning" ? {} : { provisionDeadline: null, registrationTokenSha256: null };
			const [changed] = await this.adapter.model.update({ status, statusReason: reason?.slice(0, 500) ?? null, ...ended, ...more }, { where: { id, ...(from === undefined ? {} : { status: from }) } });
			if (changed > 0) this.broker.broadcast("cache.clean.machines");
			return changed > 0;
		},
		/**
		 * A machine set to provisioning by hand (or by another service) gets a deadline, as the boot
		 * path and provision give one: a provisioning machine without one would never end (the sweep
		 * fails such rows, see provisioning.ts).
		 */
		provisioningBegins(from: MachineStatus, to: MachineStatus | undefined): Record<string, unknown> {
			if (to !== "provisioning" || from === "provisioning") return {};
			const now = new Date();
			return { provisionStartedAt: now, provisionDeadline: new Date(now.getTime() + configOf(this.broker).machines.provisionTimeoutMs) };
		},
		selectionOf(ctx: Context, machine: MachineRow): Promise<Chosen> {
			return selectionOf(ctx, machine);
		},
		viewOf(machine: MachineRow, mac: string, profile: ProfileRow, token: string | null): Record<string, unknown> {
			return viewOf(configOf(this.broker).publicUrl, machine, mac, profile, token);
		},
		renderedScript(profile: ProfileRow, field: TemplateField, view: Record<string, unknown>) {
			return renderedScript(configOf(this.broker).publicUrl, profile, field, view);
		},
		/** The machine a token was made for, if it is still provisioning within its deadline; the token is not used up here. */
		async tokenMachine(token: string): Promise<MachineRow> {
			const row = await this.adapter.model.findOne({ where: { registrationTokenSha256: sha256(token), status: "provisioning", provisionDeadline: { [Op.gt]: new Date() } } });
			if (!row) throw tokenRefused("is not a provisioning machine's current registration token (wrong, used already, or past its provisioning deadline)");
			return row.get({ plain: true });
		},
	},
	created() {
		this.discoveries = new RateLimiter(this.settings.discoveryBurst, this.settings.discoveryPerSecond);
		this.discoveriesAll = new RateLimiter(this.settings.discoveryAllBurst, this.settings.discoveryAllPerSecond);
		this.discoveryFullLoggedAt = 0;
		// As the gateway's boot trail: a client adds a boot's worth of steps, then one a second.
		this.stepsPerClient = new RateLimiter(60, 1);
		this.bootEvents = new BootEventRecorder(this.broker);
		const { provisionTimeoutMs, provisionConcurrency } = configOf(this.broker).machines;
		// A few looks per timeout: a short test timeout is noticed soon, a long one costs a query every 5 s.
		const sweepMs = Math.min(5000, Math.max(200, Math.floor(provisionTimeoutMs / 4)));
		const adapter = () => this.adapter;
		this.provisioning = new Provisioning(
			{
				broker: this.broker,
				logger: this.logger,
				// The adapter exists once the db mixin has started, after `created`; provisioning writes the stored form, as the inventory does.
				get model() {
					return adapter().model as unknown as ModelStatic<Model>;
				},
				machine: (id) => this.machine(id),
				shown: (ctx, id) => this.shown(ctx, id),
				password: (row) => (row.bmcPassword ? this.sealer().open(row.bmcPassword) : null),
				setStatus: (id, status, reason, more, from) => this.setStatusOf(id, status, reason, more, from),
			},
			{ timeoutMs: provisionTimeoutMs, concurrency: provisionConcurrency, sweepMs },
		);
	},
	async started() {
		// The inventory writes the stored form (macs as one string), which the entity's read type does not describe.
		this.inventory = await Inventory.open(this.adapter.model as unknown as ModelStatic<Model>);
		await this.provisioning.start();
	},
	async stopped() {
		await this.provisioning?.stop();
		await this.bootEvents?.stop();
	},
});

function siteRefused(machine: MachineRow): Errors.MoleculerClientError {
	const message = `must be the site of machine ${machine.id} (${machine.name}): ${machine.artifactId}`;
	return new Errors.MoleculerClientError(`artifactId ${message}`, 409, "MACHINE_SITE_MISMATCH", [{ field: "artifactId", message }]);
}

function tokenRefused(message: string): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(`machineToken ${message}`, 401, "MACHINE_TOKEN_REFUSED", [{ field: "machineToken", message }]);
}
