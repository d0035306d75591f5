import { createHash, randomUUID } from "node:crypto";
import type { Context, Service, ServiceBroker, ServiceSchema } from "moleculer";
import type { ModelAttributes } from "sequelize";
import { UnrecoverableError } from "bullmq";
import type { Config } from "./config";
import { configOf } from "./context";
import { DataTypes, Op } from "./db";
import { JOB_ROW_FIELDS, UNFINISHED, clampProgress, jobRowsMixin, type JobRowColumns, type JobRowsMethods } from "./job-rows";
import { jobWorkerMixin } from "./job-worker";
import { queueProducerMixin, type QueueProducerMethods, type QueueProducerVars } from "./queue";
import { entityMixin, type EntityMethods, type EntityRow, type EntityVars } from "./registry";
import { ID_PARAM, respondCreated } from "./rest";
import { defineMixin } from "./service-schema";
import { storeFor, type ObjectStore } from "./store";

/**
 * What a builder is: the entity (inputs → one artifact file) that the manager serves over REST and
 * the worker builds. One spec is shared by both halves so they cannot disagree. `Inputs` are the
 * columns a client sends (checked by `params` before any of the spec's functions sees them).
 */
export interface BuilderSpec<Inputs extends object = Record<string, unknown>> {
	/** Plural entity name: "grubs" → REST /api/grubs, table, BullMQ queue name, store prefix. */
	name: string;
	/** The input columns (sequelize DataTypes). */
	fields: ModelAttributes;
	/** fastest-validator rules for POST (allow-lists: type "enum"); unknown fields are refused. */
	params: Record<string, unknown>;
	/** File name of the artifact, e.g. "ipxe.efi", "grub.img", "dist.iso". */
	artifactName(inputs: Inputs): string;
	/** Extra cross-field checks at POST time; throw invalid(field, msg) for a 422. `ctx` may call other services. */
	validate?(inputs: Inputs, ctx?: Context): void | Promise<void>;
	/** Extra columns the worker's result fills in (e.g. ipxe's `embedded`). */
	resultFields?: ModelAttributes;
	/**
	 * Whether identical inputs may reuse an earlier artifact (default true). Say false when the
	 * inputs do not determine the output, e.g. they point at URLs whose content can change.
	 */
	cacheable?(inputs: Inputs, config: Config): boolean;
	/**
	 * Bump when the same inputs would now build a different artifact; part of the cache key. A
	 * function when the workers' configuration decides what gets built (e.g. iPXE from source or not).
	 */
	version?: string | ((config: Config) => string);
}

export interface BuildContext<Inputs extends object = Record<string, unknown>> {
	/** The row id. */
	id: number;
	inputs: Inputs;
	/** Private temp dir for this job attempt, removed afterwards. */
	workDir: string;
	/** Report progress, 0..100; it reaches the row. */
	progress(percent: number): Promise<void>;
	/** Aborted when the build runs over its time limit; pass it to exec/run. */
	signal: AbortSignal;
	logger: Service["logger"];
	store: ObjectStore;
	config: Config;
	/** For calls to other services (e.g. a manager's `artifact` action); never the database. */
	broker: ServiceBroker;
}

export interface BuildResult {
	/** The built file; uploaded to `<name>/<id>/<artifactName>`. */
	file: string;
	/** Values for the spec's resultFields columns. */
	fields?: Record<string, unknown>;
}

export interface WorkerSpec<Inputs extends object = Record<string, unknown>> extends BuilderSpec<Inputs> {
	build(ctx: BuildContext<Inputs>): Promise<BuildResult>;
	/** Jobs this worker process runs at once (default 1: toolchains are CPU-bound). */
	concurrency?: number;
	/** Time limit of one attempt in ms (default 10 min). */
	timeout?: number;
	/** BullMQ lock: a worker silent this long is presumed dead and its job retried (default 10 s). */
	lockDuration?: number;
}

/** What a job hands back to the manager (the worker never writes rows itself). */
interface JobOutcome {
	key: string;
	fields: Record<string, unknown>;
}

interface JobData<Inputs> {
	id: number;
	inputs: Inputs;
}

/** Internal columns: how a row finds its job and its (possibly shared) artifact. */
const INTERNAL_COLUMNS = ["artifactKey", "inputsHash", "jobId"];

/** A build failure that retrying cannot fix (bad part, refused URL): fails the job at once. */
export function permanentFailure(message: string): never {
	throw new UnrecoverableError(message);
}

function sortedJson(value: unknown): string {
	if (Array.isArray(value)) return `[${value.map(sortedJson).join(",")}]`;
	if (value && typeof value === "object") {
		const entries = Object.entries(value as Record<string, unknown>)
			.filter(([, v]) => v !== undefined)
			.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
		return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${sortedJson(v)}`).join(",")}}`;
	}
	return JSON.stringify(value ?? null);
}

function requireConfig(config: Config | undefined, builder: string): Config {
	if (!config) throw new Error(`inputsHash: ${builder}'s version depends on the configuration; pass it`);
	return config;
}

/** Content address of a build: normalized inputs + builder name and version. */
export function inputsHash(spec: Pick<BuilderSpec, "name" | "version">, inputs: object, config?: Config): string {
	const version = typeof spec.version === "function" ? spec.version(requireConfig(config, spec.name)) : spec.version;
	return createHash("sha256")
		.update(sortedJson({ builder: spec.name, version: version ?? "1", inputs }))
		.digest("hex");
}

function artifactKeyOf<Inputs extends object>(spec: BuilderSpec<Inputs>, id: number, inputs: Inputs): string {
	return `${spec.name}/${id}/${spec.artifactName(inputs)}`;
}

/** A build row: its job's columns, where its artifact is, and the spec's inputs and result columns. */
type BuildRowColumns = JobRowColumns & { url: string | null; artifactKey: string | null; inputsHash: string | null } & Record<string, unknown>;

interface BuilderManagerMethods {
	reuseArtifact(inputs: object, hash: string): Promise<EntityRow<BuildRowColumns> | null>;
	enqueueBuild(inputs: object, hash: string): Promise<EntityRow<BuildRowColumns>>;
	releaseArtifact(key: string | null): Promise<void>;
}

/**
 * Manager half: the REST entity /api/<name> (list, get, create, remove; no update: a build's inputs
 * are what it was built from) and the queue producer. Owns the rows, kept in line with their jobs
 * by jobRowsMixin (reconciled when the manager starts and every `settings.reconcileInterval` ms).
 */
export function builderManagerMixin<Inputs extends object>(spec: BuilderSpec<Inputs>): Partial<ServiceSchema> {
	const resultColumns = Object.keys(spec.resultFields ?? {});
	const fields: ModelAttributes = {
		...JOB_ROW_FIELDS,
		url: { type: DataTypes.STRING(2048), allowNull: true },
		...spec.fields,
		...spec.resultFields,
		artifactKey: { type: DataTypes.STRING(1024), allowNull: true },
		inputsHash: { type: DataTypes.STRING(64), allowNull: true },
	};
	return defineMixin<BuilderManagerMethods & EntityMethods<BuildRowColumns> & JobRowsMethods & QueueProducerMethods, EntityVars<BuildRowColumns> & QueueProducerVars>({
		mixins: [
			entityMixin({
				name: spec.name,
				fields,
				params: spec.params,
				hiddenFields: INTERNAL_COLUMNS,
				// Job events find their row by jobId; cache lookups go by inputsHash.
				modelOptions: { indexes: [{ fields: ["jobId"] }, { fields: ["inputsHash"] }, { fields: ["artifactKey"] }] },
			}),
			queueProducerMixin(spec.name),
			jobRowsMixin(spec.name),
		],
		actions: {
			create: {
				async handler(ctx: Context<Record<string, unknown>>) {
					// The action's params are the spec's rules ($$strict): what passed them is the spec's Inputs.
					const inputs = this.pickFields(ctx.params) as Inputs;
					await spec.validate?.(inputs, ctx);
					const hash = inputsHash(spec, inputs, configOf(this.broker));
					const reused = spec.cacheable?.(inputs, configOf(this.broker)) === false ? null : await this.reuseArtifact(inputs, hash);
					const row = reused ?? (await this.enqueueBuild(inputs, hash));
					const json = await this.transformDocuments(ctx, {}, row);
					await this.entityChanged("created", json, ctx);
					return respondCreated(ctx, json, `/api/${spec.name}/${json.id}`);
				},
			},
			update: false,
			remove: {
				async handler(ctx: Context<{ id: number }>) {
					const row = await this.findOrFail(ctx.params.id);
					const json = await this.transformDocuments(ctx, {}, row);
					const { jobId, artifactKey, status } = row.get();
					if (jobId && UNFINISHED.includes(status)) {
						// An active job cannot be removed (it is locked); its result is dropped as an orphan.
						const job = await this.queue.getJob(jobId);
						await job?.remove().catch(() => undefined);
					}
					await this.adapter.removeById(ctx.params.id);
					await this.releaseArtifact(artifactKey);
					await this.entityChanged("removed", json, ctx);
					return json;
				},
			},
			/** Where a done row's artifact is, for other services (e.g. an ISO built from parts by id). */
			artifact: {
				visibility: "public",
				params: { id: ID_PARAM },
				async handler(ctx: Context<{ id: number }>) {
					const row = (await this.findOrFail(ctx.params.id)).get();
					return { id: row.id, status: row.status, error: row.error, key: row.artifactKey, url: row.url };
				},
			},
		},
		methods: {
			/** A done row with the same inputs whose artifact still exists → a new row sharing it. */
			async reuseArtifact(inputs: object, hash: string) {
				const earlier = await this.adapter.model.findOne({
					where: { inputsHash: hash, status: "done", artifactKey: { [Op.ne]: null } },
					order: [["id", "DESC"]],
				});
				if (!earlier) return null;
				const previous = earlier.get();
				if (!previous.artifactKey || !(await storeFor(configOf(this.broker)).stat(previous.artifactKey))) return null;
				const results = Object.fromEntries(resultColumns.map((c) => [c, previous[c]]));
				return this.adapter.insert({ ...inputs, ...results, status: "done", progress: 100, error: null, url: previous.url, artifactKey: previous.artifactKey, inputsHash: hash });
			},
			/** A queued row and its job; if the queue cannot take the job, the row is taken back (503). */
			async enqueueBuild(inputs: object, hash: string) {
				const jobId = randomUUID();
				const results = Object.fromEntries(resultColumns.map((c) => [c, null]));
				const row = await this.adapter.insert({ ...inputs, ...results, status: "queued", progress: 0, error: null, url: null, inputsHash: hash, jobId });
				try {
					await this.enqueueJob({ id: row.id, inputs } satisfies JobData<object>, jobId);
				} catch (err) {
					await this.adapter.removeById(row.id);
					throw err;
				}
				return row;
			},
			/** Remove an artifact once no row points at it any more (rows may share one by content). */
			async releaseArtifact(key: string | null) {
				if (!key) return;
				const users = await this.adapter.model.count({ where: { artifactKey: key } });
				if (users === 0) await storeFor(configOf(this.broker)).remove(key);
			},
			async applyCompleted(jobId: string, value: JobOutcome) {
				const results = Object.fromEntries(resultColumns.filter((c) => value.fields?.[c] !== undefined).map((c) => [c, value.fields[c]]));
				const url = storeFor(configOf(this.broker)).url(value.key);
				const count = await this.updateUnfinished(jobId, { ...results, status: "done", progress: 100, error: null, url, artifactKey: value.key });
				// Its row was deleted while it built: drop the artifact nobody will ask for.
				if (count === 0 && !(await this.adapter.model.count({ where: { jobId } }))) await this.releaseArtifact(value.key);
			},
			/** Its job vanished from the queue (Redis lost, or never added): build it again under a new job. */
			async requeueRow(row: BuildRowColumns & { id: number }) {
				const jobId = randomUUID();
				const inputs = Object.fromEntries(Object.keys(spec.params).filter((k) => row[k] !== null && row[k] !== undefined).map((k) => [k, row[k]]));
				await this.adapter.model.update({ jobId, status: "queued", progress: 0 }, { where: { id: row.id } });
				await this.enqueue(spec.name, { id: row.id, inputs } satisfies JobData<object>, { jobId });
			},
		},
		async started() {
			await this.reconcile();
			this.startReconciling();
		},
		async stopped() {
			await this.stopReconciling();
		},
	});
}

/**
 * Worker half: consumes the queue, runs `build` in a private work dir, uploads the file to
 * `<name>/<id>/<artifactName>` and returns where it went; the manager writes the row. A client
 * error (4xx) thrown by a build fails the job at once, anything else is retried by BullMQ.
 */
export function builderWorkerMixin<Inputs extends object>(spec: WorkerSpec<Inputs>): Partial<ServiceSchema> {
	return jobWorkerMixin<JobData<Inputs>, JobOutcome>({
		queue: spec.name,
		concurrency: spec.concurrency ?? 1,
		lockDuration: spec.lockDuration ?? 10_000,
		timeoutMs: spec.timeout ?? 10 * 60 * 1000,
		what: "build",
		idOf: (job) => job.data?.id,
		async run({ job, id, workDir, signal, config, logger, broker }) {
			const { inputs } = job.data;
			const store = storeFor(config);
			const result = await spec.build({
				id,
				inputs,
				workDir,
				progress: (percent) => job.updateProgress(clampProgress(percent) ?? 0),
				signal,
				logger,
				store,
				config,
				broker,
			});
			const key = artifactKeyOf(spec, id, inputs);
			await store.putFile(key, result.file);
			return { key, fields: result.fields ?? {} };
		},
	});
}
