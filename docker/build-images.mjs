#!/usr/bin/env node
// `npm run images`: build every image under docker/ (context: the repository root), tagged
// clusterplatform/<dir>:<version>, the Node image first and each worker image FROM it.
//
//   npm run images [-- --tag=0.1.0] [--only=node,distributor] [--json=sizes.json]
//
// Base image: every Dockerfile builds FROM debian:bookworm-slim. It is used when the engine has
// it, pulled when it can be, and otherwise (no image registry reachable) made from Debian's
// packages with mmdebstrap and `docker import`ed under that name, so the Dockerfiles build
// unchanged (`--make-base` makes it even when a pull would work; needs root and mmdebstrap).
//
// Environment:
//   DOCKER_HOST            the engine (as for docker itself)
//   DOCKER                 the docker client (default: `docker` when it has BuildKit, through
//                          buildx or built in; else Debian's /usr/bin/docker)
//   IPXE_SOURCE_TARBALL    iPXE's release tarball (`git archive` of the pinned commit, as setup
//                          takes it): served to the build on 127.0.0.1 instead of downloading
//                          from iPXE's repository
//   BUILD_CA_CERTIFICATES  a PEM bundle of extra CA certificates (a TLS-intercepting proxy's),
//                          passed to the steps that download as the build secret
//                          `ca-certificates`; default: /usr/local/share/ca-certificates/*.crt
//                          when there are any. Never stored in an image.
//   NPM_REGISTRY           the npm registry Node, npm and the dependencies come from
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const BASE_IMAGE = "debian:bookworm-slim";
export const SUITE = "bookworm";
/** The images, in build order: the Node image, then every worker built FROM it. */
export const IMAGES = ["node", "distributor", "grub-worker", "syslinux-worker", "iso-worker", "mirror-worker", "ipxe-worker"];

function parseArgs(argv) {
	const options = { tag: JSON.parse(fs.readFileSync(path.join(ROOT, "lerna.json"), "utf8")).version, only: null, json: null, logDir: null, makeBase: false, jobs: 2 };
	for (const arg of argv) {
		const [key, value] = arg.replace(/^--/, "").split(/=(.*)/s);
		if (key === "tag") options.tag = value;
		else if (key === "only") options.only = value.split(",").filter(Boolean);
		else if (key === "json") options.json = value;
		else if (key === "make-base") options.makeBase = true;
		else if (key === "jobs") options.jobs = Math.max(1, Number(value) || 1);
		else if (key === "log-dir") options.logDir = value;
		else throw new Error(`unknown option ${arg} (--tag=, --only=, --json=, --log-dir=, --make-base, --jobs=)`);
	}
	return options;
}

const log = (line) => console.log(`[images] ${line}`);

function hasBuildKit(client) {
	// A docker client with buildx, or one whose own builder speaks BuildKit (20.10: DOCKER_BUILDKIT=1).
	if (spawnSync(client, ["buildx", "version"], { stdio: "ignore" }).status === 0) return true;
	const version = spawnSync(client, ["version", "--format", "{{.Client.Version}}"], { encoding: "utf8" }).stdout?.trim() ?? "";
	const major = Number(version.split(".")[0]);
	return major > 0 && major < 23;
}

export function dockerClient() {
	if (process.env.DOCKER) return process.env.DOCKER;
	if (hasBuildKit("docker")) return "docker";
	if (fs.existsSync("/usr/bin/docker") && hasBuildKit("/usr/bin/docker")) return "/usr/bin/docker";
	throw new Error("no docker client with BuildKit (install docker-buildx, or Debian's docker.io)");
}

function run(command, args, { input, quiet = false, logFile } = {}) {
	return new Promise((resolve, reject) => {
		const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, DOCKER_BUILDKIT: "1", BUILDKIT_PROGRESS: "plain" }, stdio: [input ? "pipe" : "ignore", "pipe", "pipe"] });
		let tail = "";
		const out = logFile ? fs.createWriteStream(logFile, { flags: "a" }) : null;
		const take = (chunk) => {
			tail = (tail + chunk).slice(-8000);
			out?.write(chunk);
			if (!quiet && !out) process.stdout.write(chunk);
		};
		child.stdout.on("data", take);
		child.stderr.on("data", take);
		if (input) input(child.stdin);
		child.on("error", reject);
		child.on("close", (code) => {
			out?.end();
			if (code === 0) resolve(tail);
			else reject(new Error(`${path.basename(command)} ${args.slice(0, 2).join(" ")} exited ${code}:\n${tail}`));
		});
	});
}

/** The base image: present, pulled, or made from Debian's packages (mmdebstrap → docker import). */
export async function ensureBase(docker, { makeBase = false } = {}) {
	if (!makeBase && spawnSync(docker, ["image", "inspect", BASE_IMAGE], { stdio: "ignore" }).status === 0) return "present";
	if (!makeBase) {
		const pull = spawnSync(docker, ["pull", "-q", BASE_IMAGE], { stdio: "ignore", timeout: 120_000 });
		if (pull.status === 0) return "pulled";
		log(`${BASE_IMAGE} cannot be pulled: making it from Debian's packages (mmdebstrap ${SUITE})`);
	}
	if (spawnSync("mmdebstrap", ["--version"], { stdio: "ignore" }).status !== 0) throw new Error(`${BASE_IMAGE} is neither present nor pullable, and mmdebstrap is not installed to make it`);
	const started = Date.now();
	// As Docker's own slim images: minbase, no documentation, manual pages or translations, no apt
	// lists; and their apt settings (kept in the image, as there): no package caches or downloaded
	// .debs left behind by an apt-get in a Dockerfile, compressed indexes, no translations.
	const clean = "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";
	const mmdebstrap = [
		"--variant=minbase",
		"--quiet",
		...[
			'Acquire::Languages "none"',
			'Acquire::GzipIndexes "true"',
			'Dir::Cache::pkgcache ""',
			'Dir::Cache::srcpkgcache ""',
			`DPkg::Post-Invoke { "${clean}"; }`,
			`APT::Update::Post-Invoke { "${clean}"; }`,
			'Apt::AutoRemove::SuggestsImportant "false"',
		].map((option) => `--aptopt=${option}`),
		"--dpkgopt=force-unsafe-io",
		// Merged /usr made by mmdebstrap's own hook, which leaves usr-is-merged as Docker's images
		// have it (the default installs usrmerge, and perl with it).
		"--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
		...["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*", "/usr/share/groff/*", "/usr/share/lintian/*", "/usr/share/linda/*"].map((p) => `--dpkgopt=path-exclude=${p}`),
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-include=/usr/share/locale/locale.alias",
		"--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin \"$1\"/var/cache/ldconfig/aux-cache \"$1\"/var/log/*.log \"$1\"/var/log/apt/*",
		SUITE,
		"-",
		"http://deb.debian.org/debian",
		"http://deb.debian.org/debian bookworm-updates main",
		"http://deb.debian.org/debian-security bookworm-security main",
	];
	await new Promise((resolve, reject) => {
		const make = spawn("mmdebstrap", mmdebstrap, { stdio: ["ignore", "pipe", "pipe"] });
		const load = spawn(docker, ["import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE], { stdio: ["pipe", "ignore", "pipe"] });
		make.stdout.pipe(load.stdin);
		let errors = "";
		make.stderr.on("data", (d) => (errors += d));
		load.stderr.on("data", (d) => (errors += d));
		let pending = 2;
		const done = (who) => (code) => {
			if (code !== 0) reject(new Error(`${who} exited ${code}: ${errors.slice(-4000)}`));
			else if (--pending === 0) resolve();
		};
		make.on("close", done("mmdebstrap"));
		load.on("close", done("docker import"));
	});
	log(`made ${BASE_IMAGE} from Debian's packages in ${((Date.now() - started) / 1000).toFixed(0)} s`);
	return "made";
}

/** IPXE_SOURCE_TARBALL served on 127.0.0.1 for the build's download step (builds run with --network host). */
function serveFile(file) {
	return new Promise((resolve) => {
		const server = http.createServer((req, res) => {
			if (req.url !== `/${path.basename(file)}`) return void res.writeHead(404).end();
			res.writeHead(200, { "content-length": fs.statSync(file).size });
			fs.createReadStream(file).pipe(res);
		});
		server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${server.address().port}/${path.basename(file)}`, close: () => server.close() }));
	});
}

/** The extra CA bundle for downloads inside builds (a temp file; never part of an image). */
function caBundle(scratch) {
	if (process.env.BUILD_CA_CERTIFICATES) return process.env.BUILD_CA_CERTIFICATES === "none" ? null : path.resolve(process.env.BUILD_CA_CERTIFICATES);
	const dir = "/usr/local/share/ca-certificates";
	const found = fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith(".crt")) : [];
	if (!found.length) return null;
	const bundle = path.join(scratch, "ca-certificates.pem");
	fs.writeFileSync(bundle, found.map((f) => fs.readFileSync(path.join(dir, String(f)), "utf8")).join("\n"));
	return bundle;
}

export function imageName(dir, tag) {
	return `clusterplatform/${dir}:${tag}`;
}

export function imageSize(docker, image) {
	return Number(spawnSync(docker, ["image", "inspect", "--format", "{{.Size}}", image], { encoding: "utf8" }).stdout.trim());
}

export async function buildImages(options) {
	const docker = dockerClient();
	const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "clusterplatform-images-"));
	const result = { base: null, images: [], seconds: {} };
	let server = null;
	try {
		const started = Date.now();
		result.base = await ensureBase(docker, options);
		result.seconds.base = Math.round((Date.now() - started) / 1000);
		const ca = caBundle(scratch);
		const common = ["--network", "host", ...(ca ? ["--secret", `id=ca-certificates,src=${ca}`] : [])];
		if (process.env.NPM_REGISTRY) common.push("--build-arg", `NPM_REGISTRY=${process.env.NPM_REGISTRY.replace(/\/$/, "")}`);
		const wanted = options.only ?? IMAGES;
		const build = async (dir) => {
			const args = ["build", ...common, "-f", `docker/${dir}/Dockerfile`, "-t", imageName(dir, options.tag)];
			if (dir === "node") args.push("--target", "runtime");
			else args.push("--build-arg", `BASE_IMAGE=${imageName("node", options.tag)}`);
			if (dir === "ipxe-worker" && process.env.IPXE_SOURCE_TARBALL) {
				server ??= await serveFile(path.resolve(process.env.IPXE_SOURCE_TARBALL));
				args.push("--build-arg", `IPXE_SOURCE_URL=${server.url}`);
			}
			if (dir === "ipxe-worker" && process.env.IPXE_PREPARE_PLATFORMS) args.push("--build-arg", `IPXE_PREPARE_PLATFORMS=${process.env.IPXE_PREPARE_PLATFORMS}`);
			const began = Date.now();
			const logFile = options.logDir ? path.join(options.logDir, `${dir}.log`) : path.join(scratch, `${dir}.log`);
			log(`building ${imageName(dir, options.tag)}`);
			await run(docker, [...args, "."], { logFile });
			result.seconds[dir] = Math.round((Date.now() - began) / 1000);
			log(`built ${imageName(dir, options.tag)} in ${result.seconds[dir]} s`);
		};
		if (wanted.includes("node")) await build("node");
		// The worker images share the Node image's layers; they build side by side.
		const queue = wanted.filter((dir) => dir !== "node").sort((a, b) => (a === "ipxe-worker" ? -1 : b === "ipxe-worker" ? 1 : 0));
		const workers = Array.from({ length: Math.min(options.jobs, queue.length) }, async () => {
			for (let dir = queue.shift(); dir; dir = queue.shift()) await build(dir);
		});
		await Promise.all(workers);
		for (const dir of [...wanted].sort((a, b) => IMAGES.indexOf(a) - IMAGES.indexOf(b))) {
			result.images.push({ image: imageName(dir, options.tag), bytes: imageSize(docker, imageName(dir, options.tag)) });
		}
		result.images.push({ image: BASE_IMAGE, bytes: imageSize(docker, BASE_IMAGE) });
		result.seconds.total = Math.round((Date.now() - started) / 1000);
		return result;
	} finally {
		server?.close();
		fs.rmSync(scratch, { recursive: true, force: true });
	}
}

export function sizeTable(result) {
	const mb = (bytes) => `${(bytes / 1e6).toFixed(0)} MB`;
	return ["| image | size | build |", "|---|---|---|", ...result.images.map(({ image, bytes }) => `| \`${image}\` | ${mb(bytes)} | ${result.seconds[image.replace(/^clusterplatform\/|:.*$/g, "")] ?? result.seconds.base ?? "?"} s |`)].join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
	const options = parseArgs(process.argv.slice(2));
	buildImages(options).then(
		(result) => {
			console.log(sizeTable(result));
			if (options.json) fs.writeFileSync(options.json, JSON.stringify(result, null, 2));
		},
		(err) => {
			console.error(`[images] ${err.message}`);
			process.exit(1);
		},
	);
}
