import type { Context, Logger, ServiceBroker } from "moleculer";
import { Errors } from "moleculer";
import type { Model, ModelStatic } from "sequelize";
import { ConflictError, Op, UnavailableError, invalid, type BootEvent } from "@clusterplatform/core";
import { defaultBmcPort, type MachineStatus } from "./fields";
import type { MachineRow } from "./machines";

/*
 * Power and provisioning of a machine through its BMC, and the provisioning state machine:
 *
 *   provision → next boot PXE (a BMC that refuses: go on, with a warning on the machine)
 *             → status `provisioning`, deadline = now + MACHINES_PROVISION_TIMEOUT
 *             → power cycle
 *             → the boot path moves the reason along (script fetched, post-boot fetched)
 *             → `ready` when the node registers (machines.linkLocalnode), or
 *             → `failed` at the deadline, naming the last step the boot timeline saw.
 *
 * The deadline is a column, so a restart loses nothing: the sweep that fails overdue machines runs
 * at start and then periodically (one timer per service, stopped with it).
 */

export type PowerAction = "on" | "off" | "cycle" | "status";
export type BootDevice = "pxe" | "disk" | "cdrom";

/** The worker bounds a BMC call at 30 s and the manager's route at 60 s: wait a little longer, so theirs is the error seen. */
const BMC_CALL_TIMEOUT_MS = 65_000;
/** Most machines one bulk provision takes: each holds a BMC slot for up to two bounded calls. */
export const BULK_MAX = 100;
/** Overdue machines failed per sweep (the next sweep takes the rest). */
const SWEEP_BATCH = 200;
/** Timeline views read per machine when it fails: its first MACs are enough to name the last step. */
const MACS_ASKED = 4;

/** What provisioning needs of the machines service (its rows, their sealed passwords, its status writes). */
export interface ProvisioningHost {
	broker: ServiceBroker;
	logger: Logger;
	model: ModelStatic<Model>;
	/** The stored row (404 when there is none). */
	machine(id: number): Promise<MachineRow>;
	/** The row as the API shows it (no secrets). */
	shown(ctx: Context, id: number): Promise<object>;
	/** The BMC password, opened. */
	password(row: MachineRow): string | null;
	/** With `from`: only if the machine still has that status (false when it did not). */
	setStatus(id: number, status: MachineStatus, reason: string | null, more?: Record<string, unknown>, from?: MachineStatus): Promise<boolean>;
}

export interface ProvisioningOptions {
	timeoutMs: number;
	concurrency: number;
	/** How often overdue machines are looked for. */
	sweepMs: number;
}

export interface ProvisionOutcome {
	id: number;
	/** 202 when provisioning began, else the error's HTTP code. */
	status: number;
	machine?: object;
	error?: { name: string; message: string; type?: string; data?: unknown };
	/** When this machine's BMC calls began and ended (a bulk provision runs at most `concurrency` at once). */
	startedAt: string;
	finishedAt: string;
}

interface BmcTarget {
	artifactId: string;
	bmc: { protocol: string; address: string; port: number; user: string; password: string; cipherSuite?: number; certificateSha256?: string };
	label: string;
}

type ClientError = Error & { code?: number; type?: string; data?: unknown };

export class Provisioning {
	private timer: NodeJS.Timeout | null = null;
	private sweeping: Promise<void> | null = null;

	constructor(
		private readonly host: ProvisioningHost,
		readonly options: ProvisioningOptions,
	) {}

	/** Fail what a stopped process left overdue, then keep watching. */
	async start(): Promise<void> {
		await this.sweep();
		this.timer = setInterval(() => void this.sweep(), this.options.sweepMs);
		this.timer.unref();
	}

	async stop(): Promise<void> {
		if (this.timer) clearInterval(this.timer);
		this.timer = null;
		await this.sweeping;
	}

	async power(ctx: Context, id: number, action: PowerAction): Promise<{ id: number; power: "on" | "off"; action: PowerAction }> {
		const row = await this.host.machine(id);
		const answer = await this.callBmc(ctx, row, this.targetOf(row), { action });
		return { id, power: answer.power as "on" | "off", action };
	}

	async bootDevice(ctx: Context, id: number, device: BootDevice, persistent: boolean) {
		const row = await this.host.machine(id);
		await this.callBmc(ctx, row, this.targetOf(row), { action: "bootdev", device, persistent });
		return { id, device, persistent, applied: true as const };
	}

	/**
	 * Next boot from the network, then a power cycle. The machine is claimed first, in the database
	 * (status → `provisioning` unless it is so already: a 409 otherwise), so two processes never
	 * power-cycle one machine together; a fast machine's first request finds it provisioning. Errors
	 * before the claim write nothing; one up to the boot device gives the machine back as it was; a
	 * failed power cycle leaves it `failed` with the error as its reason.
	 */
	async provision(ctx: Context, id: number, profileId?: number): Promise<object> {
		const row = await this.host.machine(id);
		const target = this.targetOf(row);
		if (profileId !== undefined) await this.checkProfile(ctx, profileId);
		await this.siteOnline(ctx, target);
		const claimedAt = await this.claim(row, target);
		const warning = await this.nextBootFromNetwork(ctx, row, target).catch(async (err: ClientError) => {
			await this.giveBack(row, claimedAt);
			throw err;
		});
		const cycling = `power-cycling through BMC ${target.label}`;
		await this.host.model.update({ statusReason: cycling, warning, ...(profileId !== undefined ? { profileId } : {}) }, { where: { id, status: "provisioning", provisionStartedAt: claimedAt } });
		this.host.broker.broadcast("cache.clean.machines");
		const cycled = await this.callBmc(ctx, row, target, { action: "cycle" }).catch(async (err: ClientError) => {
			await this.host.setStatus(id, "failed", `provisioning: the power cycle failed: ${err.message}`);
			throw err;
		});
		const cycledAt = new Date();
		await this.host.model.update({ provisionDeadline: new Date(cycledAt.getTime() + this.options.timeoutMs) }, { where: { id, status: "provisioning", provisionStartedAt: claimedAt } });
		// Unless the machine was quicker than the BMC's answer and its boot moved the reason on already.
		await this.host.model.update({ statusReason: `power-cycled through BMC ${target.label} (it reports ${String(cycled.power)}) at ${cycledAt.toISOString()}; no boot seen yet` }, { where: { id, status: "provisioning", statusReason: cycling } });
		this.host.broker.broadcast("cache.clean.machines");
		this.host.logger.info(`machine ${id} (${row.name}): provisioning, power-cycled through ${target.label}${warning ? `; ${warning}` : ""}`);
		return this.host.shown(ctx, id);
	}

	/**
	 * The machine becomes `provisioning` in one conditional UPDATE, or the request is a 409: the row is
	 * the lock every gateway sees. The deadline leaves room for both BMC calls; the timeout proper
	 * counts from the cycle's end. When it began, which the later writes are conditioned on.
	 */
	private async claim(row: MachineRow, target: BmcTarget): Promise<Date> {
		const now = new Date();
		const [changed] = await this.host.model.update(
			{ status: "provisioning", statusReason: `setting the next boot to PXE through BMC ${target.label}`, provisionStartedAt: now, provisionDeadline: new Date(now.getTime() + 2 * BMC_CALL_TIMEOUT_MS + this.options.timeoutMs), warning: null },
			{ where: { id: row.id, status: { [Op.ne]: "provisioning" } } },
		);
		if (changed !== 1) {
			throw new ConflictError(`machine ${row.id} (${row.name}) is provisioning already: wait until it is ready or failed, or set its status to end it`, { id: row.id, field: "id" });
		}
		this.host.broker.broadcast("cache.clean.machines");
		return now;
	}

	/** The machine as it was before `claim`, unless something moved it on since. */
	private async giveBack(row: MachineRow, claimedAt: Date): Promise<void> {
		const { status, statusReason, provisionStartedAt, provisionDeadline, warning } = row;
		await this.host.model.update({ status, statusReason, provisionStartedAt, provisionDeadline, warning }, { where: { id: row.id, status: "provisioning", provisionStartedAt: claimedAt } });
		this.host.broker.broadcast("cache.clean.machines");
	}

	/** Each machine as `provision`, at most `concurrency` at once; every machine's outcome, in the order asked. */
	async provisionMany(ctx: Context, ids: number[], profileId?: number): Promise<{ concurrency: number; results: ProvisionOutcome[] }> {
		if (profileId !== undefined) await this.checkProfile(ctx, profileId);
		const unique = [...new Set(ids)];
		const results: ProvisionOutcome[] = new Array(unique.length);
		let next = 0;
		const lane = async () => {
			while (next < unique.length) {
				const index = next++;
				results[index] = await this.outcomeOf(ctx, unique[index]!, profileId);
			}
		};
		await Promise.all(Array.from({ length: Math.min(this.options.concurrency, unique.length) }, lane));
		return { concurrency: this.options.concurrency, results };
	}

	/**
	 * A step of a machine's boot, seen by the boot path. A machine that was `unknown` or `failed`
	 * and fetches its script begins provisioning (it was powered on by hand, or by its own boot order).
	 * Each write is conditional on the status `row` was read with: a boot request racing a
	 * registration (ready) or an operator must not put the machine back to provisioning.
	 */
	async stepSeen(row: MachineRow, step: string, begins: boolean): Promise<void> {
		const now = new Date();
		if (row.status === "provisioning") {
			await this.host.setStatus(row.id, "provisioning", `${step} at ${now.toISOString()}`, {}, "provisioning");
		} else if (begins && (row.status === "unknown" || row.status === "failed")) {
			await this.host.setStatus(row.id, "provisioning", `${step} at ${now.toISOString()}`, { provisionStartedAt: now, provisionDeadline: new Date(now.getTime() + this.options.timeoutMs), warning: null }, row.status);
		}
	}

	/** Machines whose deadline passed become `failed`, naming the last step seen; one sweep at a time. */
	sweep(): Promise<void> {
		this.sweeping ??= this.failOverdue()
			.catch((err: Error) => this.host.logger.warn(`provisioning sweep: ${err.message}`))
			.finally(() => {
				this.sweeping = null;
			});
		return this.sweeping;
	}

	/**
	 * Overdue provisioning machines, and provisioning ones with no deadline at all (set by hand, or
	 * left by a race): nothing else would ever end those, and provision refuses a provisioning machine.
	 */
	private async failOverdue(): Promise<void> {
		const due = () => ({ [Op.or]: [{ provisionDeadline: { [Op.lt]: new Date() } }, { provisionDeadline: null }] });
		const overdue = (await this.host.model.findAll({ where: { status: "provisioning", ...due() }, order: [["provisionDeadline", "ASC"]], limit: SWEEP_BATCH })).map((m) => m.get({ plain: true }) as MachineRow);
		for (const row of overdue) {
			const step = (await this.lastTimelineStep(row)) ?? row.statusReason ?? "none";
			const reason = row.provisionDeadline
				? `provisioning timed out: not registered ${Math.round(this.options.timeoutMs / 1000)} s after it began; last step seen: ${step}`
				: `provisioning had no deadline (nothing would have ended it); last step seen: ${step}`;
			// Only if nothing moved it on meanwhile (a registration in the same instant wins).
			const [changed] = await this.host.model.update({ status: "failed", statusReason: reason.slice(0, 500), provisionDeadline: null, registrationTokenSha256: null }, { where: { id: row.id, status: "provisioning", ...due() } });
			if (changed) {
				this.host.broker.broadcast("cache.clean.machines");
				this.host.logger.warn(`machine ${row.id} (${row.name}): ${reason}`);
			}
		}
	}

	/** The newest boot-timeline event of the machine's MACs since provisioning began, or null (none, or no boots service). */
	private async lastTimelineStep(row: MachineRow): Promise<string | null> {
		const since = row.provisionStartedAt ? new Date(row.provisionStartedAt).getTime() : 0;
		let newest: BootEvent | null = null;
		for (const mac of row.macs.slice(0, MACS_ASKED)) {
			const view = await this.host.broker.call<{ events: BootEvent[] }, object>("boots.host", { host: mac }).catch(() => ({ events: [] as BootEvent[] }));
			for (const event of view.events) {
				const at = new Date(event.at).getTime();
				if (at >= since && (!newest || at > new Date(newest.at).getTime())) newest = event;
			}
		}
		return newest ? `${newest.kind}${newest.mac ? ` from ${newest.mac}` : ""} (${newest.detail}) at ${newest.at}` : null;
	}

	private async outcomeOf(ctx: Context, id: number, profileId?: number): Promise<ProvisionOutcome> {
		const startedAt = new Date().toISOString();
		try {
			const machine = await this.provision(ctx, id, profileId);
			return { id, status: 202, machine, startedAt, finishedAt: new Date().toISOString() };
		} catch (err) {
			const e = err as ClientError;
			return { id, status: typeof e.code === "number" && e.code >= 400 ? e.code : 500, error: { name: e.name, message: e.message, type: e.type, data: e.data }, startedAt, finishedAt: new Date().toISOString() };
		}
	}

	/** Set the next boot to PXE; a BMC that refuses is no stop (the machine may boot from the network by its own order): the warning, else null. */
	private async nextBootFromNetwork(ctx: Context, row: MachineRow, target: BmcTarget): Promise<string | null> {
		try {
			await this.callBmc(ctx, row, target, { action: "bootdev", device: "pxe", persistent: false });
			return null;
		} catch (err) {
			const e = err as ClientError;
			if ((e.data as { reason?: string } | undefined)?.reason !== "boot-device-refused") throw e;
			return `the next boot was not set to PXE: BMC ${target.label} refused the boot device; power-cycled anyway, so the machine boots by its own boot order (put the network first)`;
		}
	}

	/** The BMC and site a machine's power goes through; 422 naming what is missing. */
	private targetOf(row: MachineRow): BmcTarget {
		const password = row.bmcPassword ? this.host.password(row) : null;
		if (!row.bmcProtocol || !row.bmcAddress || !row.bmcUser || !password) {
			const missing = [!row.bmcProtocol && "bmcProtocol", !row.bmcAddress && "bmcAddress", !row.bmcUser && "bmcUser", !password && "bmcPassword"].filter(Boolean).join(", ");
			invalid("bmc", `machine ${row.id} (${row.name}) has no usable BMC: set ${missing}`);
		}
		if (!row.artifactId) invalid("artifactId", `machine ${row.id} (${row.name}) has no site: its BMC is reached through its site's distributor`);
		const port = row.bmcPort ?? defaultBmcPort(row.bmcProtocol);
		return {
			artifactId: row.artifactId,
			bmc: {
				protocol: row.bmcProtocol,
				address: row.bmcAddress,
				port,
				user: row.bmcUser,
				password,
				...(row.bmcProtocol === "ipmi" && row.bmcCipherSuite !== null ? { cipherSuite: row.bmcCipherSuite } : {}),
				...(row.bmcProtocol === "redfish" && row.bmcCertificateSha256 ? { certificateSha256: row.bmcCertificateSha256 } : {}),
			},
			label: `${row.bmcProtocol} ${row.bmcAddress.includes(":") ? `[${row.bmcAddress}]` : row.bmcAddress}:${port}`,
		};
	}

	/** 503 naming the site before anything is written, when no distributor of the machine's site is online. */
	private async siteOnline(ctx: Context, target: BmcTarget): Promise<void> {
		await ctx.call("distributors.siteNode", { artifactId: target.artifactId }).catch((err: ClientError) => {
			throw this.unreachable(err, target);
		});
	}

	private async checkProfile(ctx: Context, profileId: number): Promise<void> {
		const profile = await ctx.call<unknown, object>("profiles.byId", { id: profileId });
		if (!profile) invalid("profile", `profile ${profileId} does not exist`);
	}

	/** One call to the BMC through the site's distributor; its errors name the machine and the BMC, never a credential. */
	private async callBmc(ctx: Context, row: MachineRow, target: BmcTarget, call: Record<string, unknown>): Promise<{ power?: string }> {
		try {
			return await ctx.call<{ power?: string }, object>("distributors.bmc", { artifactId: target.artifactId, ...target.bmc, ...call }, { timeout: BMC_CALL_TIMEOUT_MS });
		} catch (err) {
			const e = err as ClientError;
			if (e.name === "ServiceNotFoundError" || e.code === 503) throw this.unreachable(e, target);
			const data = e.data && typeof e.data === "object" && !Array.isArray(e.data) ? (e.data as Record<string, unknown>) : {};
			if (e.code === 502) throw new Errors.MoleculerClientError(`machine ${row.id} (${row.name}): ${e.message}`, 502, e.type ?? "BMC_ERROR", { ...data, machineId: row.id });
			throw e;
		}
	}

	private unreachable(err: ClientError, target: BmcTarget): Error {
		if (err.name !== "ServiceNotFoundError" && err.code !== 503) return err;
		const why = err.name === "ServiceNotFoundError" ? "the distributors service is not running" : err.message;
		return new UnavailableError(`no distributor for site "${target.artifactId}" is online to reach BMC ${target.label} (${why})`, { artifactId: target.artifactId, field: "artifactId" });
	}
}
