import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError, permanentFailure, processAlive, requireBinary, run, which } from "@clusterplatform/core";
import { makeGoal, type Platform, type Target } from "./targets";

/**
 * Real iPXE builds from a source tree (IPXE_SOURCE_DIR), with the script compiled in by
 * `make <platform>/<driver>.<extension> EMBED=<file>`.
 *
 * A cold build of one platform takes about a minute, so each platform gets a prepared object
 * tree under the data dir, built once. A build never runs make in the prepared tree: it takes a
 * copy of it and rebuilds there, which recompiles only the embedded script and relinks — a few
 * seconds. Two makes never share a tree (that corrupts it), concurrent builds of one platform
 * need no lock, and a failed or killed build cannot damage the prepared tree. The copy (`cp -a`,
 * ~1 s) is made ahead of time: one spare copy per platform waits beside the prepared tree, a
 * build claims it with an atomic rename (so two builds, even in two processes, never get the same
 * one) and a new spare is copied after the build; a build that finds no spare copies for itself.
 * Preparation happens in a scratch directory renamed into place when complete, so racing workers
 * at worst prepare twice. Directories left by a crashed worker are removed after an hour.
 */

/** Variables every make gets, the same for preparation and builds so objects stay valid. */
const MAKE_VARIABLES = [
	// A newer compiler's new warnings must not fail the build of a released iPXE.
	"NO_WERROR=1",
];

/** Cross compilers a platform needs on an x86-64 worker (the host gcc builds the x86 ones with -m32/-m64). */
const CROSS_COMPILERS: Partial<Record<Platform, { prefix: string; debianPackage: string }>> = {
	"bin-arm64-efi": { prefix: "aarch64-linux-gnu-", debianPackage: "gcc-aarch64-linux-gnu" },
};

/** The cross compiler a platform needs and this machine lacks, or null. */
export function crossCompilerMissing(platform: Platform): { prefix: string; debianPackage: string } | null {
	const cross = CROSS_COMPILERS[platform];
	return cross && !which(`${cross.prefix}gcc`) ? cross : null;
}

/** iPXE's util/genfsimg makes .iso images with whichever of these it finds (Debian: xorriso or genisoimage). */
const ISO_MAKERS = ["xorrisofs", "genisoimage", "mkisofs"];

const PREPARE_TIMEOUT_MS = 30 * 60 * 1000;
const BUILD_TIMEOUT_MS = 10 * 60 * 1000;
const COPY_TIMEOUT_MS = 5 * 60 * 1000;
const LOCK_POLL_MS = 1000;
/** Scratch, spare and build copies older than this belong to a worker that died. */
const ABANDONED_AFTER_MS = 60 * 60 * 1000;
/** Names beside the prepared tree <platform>: <platform>.<kind>-<random>. */
const PREPARING = ".preparing-";
const SPARE = ".spare-";
const BUILDING = ".building-";
const PARTIAL = ".partial";
const MANIFEST = ".clusterplatform-prepared.json";
/** Scripts compiled into the preparation builds; two different ones, see prepare(). */
const PLACEHOLDER_SCRIPTS = ["#!ipxe\necho prepared tree (1)\n", "#!ipxe\necho prepared tree (2)\n"];

export interface PreparedManifest {
	goal: string;
	sourceDir: string;
	fingerprint: string;
	/** Seconds the preparation took in all: the copy and both builds. */
	seconds: number;
	/** Seconds of the source copy, and of each build: the first is a cold build, the second a rebuild. */
	copySeconds: number;
	buildSeconds: number[];
	preparedAt: string;
}

/** A platform's object tree as an operator sees it while the worker prepares it. */
export interface PlatformTreeState {
	platform: Platform;
	state: "prepared" | "preparing" | "not prepared" | "failed";
	/** Seconds the preparation took (prepared trees). */
	seconds?: number;
	preparedAt?: string;
	error?: string;
}

export interface BuildOptions {
	signal?: AbortSignal;
	progress?(percent: number): Promise<void> | void;
	logger?: { info(...args: unknown[]): void };
}

/** The `src` directory of an iPXE checkout given as its root or as src itself; ConfigError otherwise. */
export function locateIpxeSource(dir: string): string {
	const root = path.resolve(dir);
	for (const candidate of [path.join(root, "src"), root]) {
		if (fs.existsSync(path.join(candidate, "Makefile")) && fs.existsSync(path.join(candidate, "include", "ipxe"))) return candidate;
	}
	throw new ConfigError(`IPXE_SOURCE_DIR=${dir} is not an iPXE source tree (no src/Makefile and src/include/ipxe)`);
}

/**
 * A fingerprint of the source files (paths, sizes, mtimes; object dirs bin*\/ left out), so a
 * prepared tree is never reused for a different or updated checkout.
 */
export async function sourceFingerprint(srcDir: string): Promise<string> {
	const hash = createHash("sha256").update(srcDir);
	const walk = async (dir: string, relative: string): Promise<void> => {
		const entries = (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
		for (const entry of entries) {
			if (relative === "" && /^bin(-|$)/.test(entry.name)) continue;
			const rel = path.join(relative, entry.name);
			const full = path.join(dir, entry.name);
			if (entry.isDirectory()) await walk(full, rel);
			else {
				const stats = await fsp.lstat(full);
				hash.update(`${rel}\0${stats.size}\0${Math.floor(stats.mtimeMs)}\n`);
			}
		}
	};
	await walk(srcDir, "");
	return hash.digest("hex").slice(0, 16);
}

function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
	if (!signal) return promise;
	if (signal.aborted) return Promise.reject(signal.reason);
	return new Promise<T>((resolve, reject) => {
		const onAbort = () => reject(signal.reason);
		signal.addEventListener("abort", onAbort, { once: true });
		promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
	});
}

/** Make arguments are allow-listed values and paths we made; a path make would split is refused. */
function makeSafePath(file: string): string {
	if (!/^[A-Za-z0-9/._+-]+$/.test(file)) throw new Error(`path ${JSON.stringify(file)} cannot be passed to make (spaces or special characters)`);
	return file;
}

/**
 * Copies beside the prepared tree `dir` that a dead worker left behind: scratch dirs, half-made
 * spares and build copies, by their mtime (set when they are claimed: `cp -a` keeps the prepared
 * tree's old one). Complete spares are never abandoned.
 */
async function removeAbandonedCopies(dir: string): Promise<void> {
	const parent = path.dirname(dir);
	const base = path.basename(dir);
	for (const name of await fsp.readdir(parent).catch(() => [] as string[])) {
		const unfinished =
			name.startsWith(`${base}${PREPARING}`) || name.startsWith(`${base}${BUILDING}`) || (name.startsWith(`${base}${SPARE}`) && name.endsWith(PARTIAL));
		if (!unfinished) continue;
		const copy = path.join(parent, name);
		const stats = await fsp.stat(copy).catch(() => null);
		if (stats && Date.now() - stats.mtimeMs > ABANDONED_AFTER_MS) await fsp.rm(copy, { recursive: true, force: true });
	}
}

const suffix = () => randomBytes(4).toString("hex");

/**
 * Write the EMBED file so make sees it newer than the file it last built from the previous one:
 * file times are taken from a coarse clock (one kernel tick), so a script written right after a
 * build can carry the same time as that build's output, and make would skip the rebuild.
 */
async function writeEmbed(file: string, script: string, tree: string, target: Target): Promise<void> {
	await fsp.writeFile(file, script);
	const built = await fsp.stat(path.join(tree, makeGoal(target))).catch(() => null);
	if (built && (await fsp.stat(file)).mtimeMs <= built.mtimeMs) {
		const newer = new Date(Math.ceil(built.mtimeMs) + 10);
		await fsp.utimes(file, newer, newer);
	}
}

/** Mark a copy as in use now (its age is how abandoned copies are recognised). */
function touch(dir: string): Promise<void> {
	const now = new Date();
	return fsp.utimes(dir, now, now);
}

export class IpxeSourceTree {
	readonly srcDir: string;
	private fingerprintOnce: Promise<string> | null = null;
	private readonly preparing = new Map<string, Promise<string>>();
	private readonly refilling = new Map<string, Promise<void>>();
	private readonly failures = new Map<Platform, string>();
	/** One per preparation in progress, so a stopping worker can end them (see stopPreparations). */
	private readonly preparationAborts = new Map<Platform, AbortController>();

	constructor(
		sourceDir: string,
		/** Where prepared trees live: <treesDir>/<fingerprint>/<platform>. */
		readonly treesDir: string,
		readonly jobs = os.availableParallelism(),
	) {
		this.srcDir = locateIpxeSource(sourceDir);
	}

	/** Programs every source build needs; throws MissingBinaryError naming the Debian package. */
	static requireToolchain(): void {
		requireBinary("make", "make");
		requireBinary("gcc", "gcc");
		requireBinary("perl", "perl");
	}

	fingerprint(): Promise<string> {
		this.fingerprintOnce ??= sourceFingerprint(this.srcDir).catch((err) => {
			this.fingerprintOnce = null;
			throw err;
		});
		return this.fingerprintOnce;
	}

	async preparedDir(platform: Platform): Promise<string> {
		return path.join(this.treesDir, await this.fingerprint(), platform);
	}

	/** The manifest of a platform's prepared tree, or null while it is not prepared. */
	async manifest(platform: Platform): Promise<PreparedManifest | null> {
		try {
			return JSON.parse(await fsp.readFile(path.join(await this.preparedDir(platform), MANIFEST), "utf8"));
		} catch {
			return null;
		}
	}

	/** Refuse targets this worker cannot build, before spending a minute on them. */
	checkBuildable(target: Target): void {
		const cross = crossCompilerMissing(target.platform);
		if (cross) {
			permanentFailure(`${target.platform} needs the cross compiler ${cross.prefix}gcc (Debian package ${cross.debianPackage}), which this worker lacks`);
		}
		if (target.extension === "iso" && !ISO_MAKERS.some((binary) => which(binary))) {
			permanentFailure(`.iso images need one of ${ISO_MAKERS.join(", ")} (Debian package xorriso), which this worker lacks`);
		}
	}

	private makeArgs(tree: string, target: Target, embed: string): string[] {
		const cross = CROSS_COMPILERS[target.platform];
		return [
			"-C", makeSafePath(tree),
			`-j${this.jobs}`,
			makeGoal(target),
			`EMBED=${makeSafePath(embed)}`,
			...MAKE_VARIABLES,
			...(cross ? [`CROSS=${cross.prefix}`] : []),
		];
	}

	private make(tree: string, target: Target, embed: string, timeout: number, signal?: AbortSignal) {
		// A parent make's flags (e.g. from a CI job) must not leak into iPXE's build.
		return run("make", this.makeArgs(tree, target, embed), { timeout, signal, processGroup: true, env: { MAKEFLAGS: "", MFLAGS: "", MAKELEVEL: "" } });
	}

	/**
	 * The platform's prepared tree, built on first use: the whole source copied privately, the
	 * target built twice with two different placeholder scripts (DESIGN.md: a tree built once
	 * rebuilds more on its first change of EMBED; the second build settles it), then renamed into
	 * place. Concurrent callers in this process share one preparation.
	 */
	prepare(target: Target, logger?: BuildOptions["logger"]): Promise<string> {
		const key = target.platform;
		let pending = this.preparing.get(key);
		if (!pending) {
			this.failures.delete(key);
			const abort = new AbortController();
			this.preparationAborts.set(key, abort);
			pending = this.prepareUncached(target, abort.signal, logger)
				.catch((err: Error) => {
					this.failures.set(key, err.message.slice(-2000));
					throw err;
				})
				.finally(() => {
					this.preparing.delete(key);
					this.preparationAborts.delete(key);
				});
			this.preparing.set(key, pending);
		}
		return pending;
	}

	/** Where each platform's tree stands: prepared (by anyone), being prepared here, or failed here. */
	async states(platforms: readonly Platform[]): Promise<PlatformTreeState[]> {
		return Promise.all(
			platforms.map(async (platform): Promise<PlatformTreeState> => {
				const manifest = await this.manifest(platform);
				if (manifest) return { platform, state: "prepared", seconds: manifest.seconds, preparedAt: manifest.preparedAt };
				if (this.preparing.has(platform)) return { platform, state: "preparing" };
				const error = this.failures.get(platform);
				return error ? { platform, state: "failed", error } : { platform, state: "not prepared" };
			}),
		);
	}

	/**
	 * End the preparations in progress (their make is killed, the scratch copy removed) and wait
	 * for them: a stopping worker leaves no compiler running. A later prepare() starts afresh.
	 */
	async stopPreparations(): Promise<void> {
		for (const abort of this.preparationAborts.values()) abort.abort(new Error("the worker is stopping"));
		await Promise.allSettled([...this.preparing.values()]);
	}

	private async prepareUncached(target: Target, signal: AbortSignal, logger?: BuildOptions["logger"]): Promise<string> {
		const dir = await this.preparedDir(target.platform);
		await removeAbandonedCopies(dir);
		if (await this.manifest(target.platform)) return dir;
		await fsp.mkdir(path.dirname(dir), { recursive: true });
		// One process prepares a platform at a time; the others wait for its manifest.
		const lock = await this.lockPreparation(dir, target.platform, signal, logger);
		if (!lock) return dir;
		let scratch: string | null = null;
		try {
			scratch = await fsp.mkdtemp(`${dir}${PREPARING}`);
			const started = Date.now();
			logger?.info(`ipxe: preparing the ${target.platform} object tree in ${dir} (about a minute per platform)`);
			const tree = path.join(scratch, "src");
			await run("cp", ["-a", "--", this.srcDir, tree], { timeout: COPY_TIMEOUT_MS, signal });
			const copySeconds = (Date.now() - started) / 1000;
			const buildSeconds: number[] = [];
			for (const [index, script] of PLACEHOLDER_SCRIPTS.entries()) {
				const embed = path.join(scratch, `placeholder-${index}.ipxe`);
				await writeEmbed(embed, script, tree, target);
				const buildStarted = Date.now();
				await this.make(tree, target, embed, PREPARE_TIMEOUT_MS, signal);
				buildSeconds.push((Date.now() - buildStarted) / 1000);
			}
			const manifest: PreparedManifest = {
				goal: makeGoal(target),
				sourceDir: this.srcDir,
				fingerprint: await this.fingerprint(),
				seconds: (Date.now() - started) / 1000,
				copySeconds,
				buildSeconds,
				preparedAt: new Date().toISOString(),
			};
			await fsp.writeFile(path.join(tree, MANIFEST), JSON.stringify(manifest, null, 2));
			try {
				await fsp.rename(tree, dir);
				logger?.info(`ipxe: ${target.platform} object tree prepared in ${manifest.seconds.toFixed(1)} s`);
			} catch (err) {
				// Another worker finished first; its tree is as good as ours.
				if (!(await this.manifest(target.platform))) throw err;
			}
			// No spare yet: a prepared tree may be baked into an image, where a spare would only add weight.
			return dir;
		} finally {
			if (scratch) await fsp.rm(scratch, { recursive: true, force: true });
			await fsp.rm(lock, { force: true });
		}
	}

	/**
	 * The platform's preparation lock (`<dir>.lock`, holding the preparing process's PID), or null
	 * once another process has prepared the tree meanwhile. A lock whose process is gone is taken over.
	 */
	private async lockPreparation(dir: string, platform: Platform, signal: AbortSignal, logger?: BuildOptions["logger"]): Promise<string | null> {
		const lock = `${dir}.lock`;
		const deadline = Date.now() + PREPARE_TIMEOUT_MS;
		let told = false;
		while (Date.now() < deadline) {
			signal.throwIfAborted();
			try {
				await fsp.writeFile(lock, String(process.pid), { flag: "wx" });
				// Prepared by the holder we just replaced, between our check and the lock?
				if (await this.manifest(platform)) {
					await fsp.rm(lock, { force: true });
					return null;
				}
				return lock;
			} catch (err) {
				if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
			}
			const holder = Number(await fsp.readFile(lock, "utf8").catch(() => ""));
			// Our own PID: an earlier life of this process (a restarted container gets the same PID),
			// since this process prepares a platform once at a time (prepare() shares it).
			if (!holder || holder === process.pid || !processAlive(holder)) {
				await fsp.rm(lock, { force: true });
				continue;
			}
			if (!told) logger?.info(`ipxe: process ${holder} is preparing the ${platform} object tree; waiting for it`);
			told = true;
			await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
			if (await this.manifest(platform)) return null;
		}
		throw new Error(`the ${platform} object tree was not prepared within ${PREPARE_TIMEOUT_MS / 60_000} minutes by process ${await fsp.readFile(lock, "utf8").catch(() => "?")}`);
	}

	/**
	 * A copy of the prepared tree `dir` for one build: a waiting spare, claimed by renaming it
	 * (atomic: a spare another build renamed first is simply gone), or else a fresh copy.
	 */
	private async claimCopy(dir: string, signal?: AbortSignal): Promise<string> {
		const parent = path.dirname(dir);
		const claimed = path.join(parent, `${path.basename(dir)}${BUILDING}${suffix()}`);
		for (const name of await fsp.readdir(parent)) {
			if (!name.startsWith(`${path.basename(dir)}${SPARE}`) || name.endsWith(PARTIAL)) continue;
			try {
				await fsp.rename(path.join(parent, name), claimed);
			} catch {
				continue; // claimed by another build meanwhile
			}
			await touch(claimed);
			return claimed;
		}
		await run("cp", ["-a", "--", dir, claimed], { timeout: COPY_TIMEOUT_MS, signal });
		await touch(claimed);
		return claimed;
	}

	/** Copy a new spare of `dir` in the background unless one is waiting or being copied. */
	private refillSpare(dir: string): void {
		if (this.refilling.has(dir)) return;
		const parent = path.dirname(dir);
		const prefix = `${path.basename(dir)}${SPARE}`;
		const refill = (async () => {
			if ((await fsp.readdir(parent)).some((name) => name.startsWith(prefix) && !name.endsWith(PARTIAL))) return;
			const spare = path.join(parent, `${prefix}${suffix()}`);
			try {
				await run("cp", ["-a", "--", dir, `${spare}${PARTIAL}`], { timeout: COPY_TIMEOUT_MS });
				await fsp.rename(`${spare}${PARTIAL}`, spare);
			} catch {
				// Without a spare the next build copies for itself.
				await fsp.rm(`${spare}${PARTIAL}`, { recursive: true, force: true });
			}
		})()
			.catch(() => undefined)
			.finally(() => this.refilling.delete(dir));
		this.refilling.set(dir, refill);
	}

	/** Resolves when no spare copy is being made (for benchmarks and orderly shutdown). */
	async idle(): Promise<void> {
		await Promise.all([...this.refilling.values()]);
	}

	/**
	 * Build one target with `script` embedded, in a copy of the prepared tree. Returns the built
	 * file, copied into `workDir`.
	 */
	async build(target: Target, script: string, workDir: string, options: BuildOptions = {}): Promise<string> {
		this.checkBuildable(target);
		const prepared = await abortable(this.prepare(target, options.logger), options.signal);
		await options.progress?.(10);
		const tree = await this.claimCopy(prepared, options.signal);
		try {
			const embed = path.join(workDir, "embedded.ipxe");
			await writeEmbed(embed, script, tree, target);
			await options.progress?.(50);
			await this.make(tree, target, embed, BUILD_TIMEOUT_MS, options.signal);
			const output = path.join(workDir, path.basename(makeGoal(target)));
			await fsp.copyFile(path.join(tree, makeGoal(target)), output);
			return output;
		} finally {
			this.refillSpare(prepared);
			// Off the job's critical path; a leftover is removed as abandoned later.
			void fsp.rm(tree, { recursive: true, force: true }).catch(() => undefined);
		}
	}
}
