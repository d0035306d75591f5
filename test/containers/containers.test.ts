import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { Queue } from "bullmq";
import { generateToken, siteNodeId, tokenEntry } from "@clusterplatform/core";
import { IPXE_SOURCE_DIR as MANIFEST_IPXE_SOURCE_DIR } from "../../k8s/generate";
import { eventually, freePort } from "../support/ports";
import { freshPostgresDatabase } from "../support/provisioner";
import { missingRadosgwBinaries, startRadosgw, type TestRadosgw } from "../support/radosgw";
import { startRedis, type TestServer } from "../support/servers";
import { startQemu } from "../support/boot-qemu";
import { seedCallsFor, seedTutorialPath, type SeedCall } from "../support/seed";
import { startLab, type Lab } from "../lan/support/lab";
import { canMakeNamespaces, stopChild, type Lan } from "../lan/support/netns";
import { tftpGet } from "../lan/support/peers";
import { bootGuest, type Guest } from "../lan/support/qemu";
import { cloudKernel } from "../lan/support/tiny-linux";
import { attachDockerd, dockerClient, dockerdMissing, startDockerd, type Dockerd } from "./support/dockerd";
import { startContainerNats, type ContainerNats } from "./support/nats";

/**
 * The images for real, on a private dockerd that this suite starts and stops:
 *
 * 1. `docker/build-images.mjs` (what `npm run images` runs) builds every image under docker/ from
 *    debian:bookworm-slim — made here from Debian's packages with mmdebstrap, once per run, since
 *    no image registry is reachable — and the sizes are reported.
 * 2. The distributor image runs with the README's `docker run` line (the seed's, plus the bus
 *    credential) on the distributor host of a namespaced LAN (a second dockerd inside that
 *    namespace, so --net=host is that host): a QEMU guest PXE-boots through the container's
 *    dnsmasq, registers, and runs a script over SSH from the container; a restart loses nothing and
 *    keeps one distributor row; the health check turns healthy.
 * 3. The cluster as containers with host networking (gateway, registries, managers, one container
 *    per worker image) over NATS with TLS and credentials, PostgreSQL, Redis and radosgw: the seed's
 *    tutorial through the containerised gateway ends in a downloaded ISO that boots in QEMU; a
 *    worker container killed mid-build leaves the build to another.
 */
const ROOT = path.resolve(__dirname, "..", "..");
const TAG = JSON.parse(fs.readFileSync(path.join(ROOT, "lerna.json"), "utf8")).version as string;
const image = (dir: string) => `clusterplatform/${dir}:${TAG}`;
const IMAGE_DIRS = fs.readdirSync(path.join(ROOT, "docker")).filter((dir) => fs.existsSync(path.join(ROOT, "docker", dir, "Dockerfile")));
const SITE = "felicitas.pojtinger.swabia.sol";
const IPXE_COMMIT = "12798ec29aa8a64d8675c4378b99f5fe28447afb";
/** The platforms the iPXE worker image prepares at build time (its Dockerfile's default). */
const PREPARED_PLATFORMS = /^ARG IPXE_PREPARE_PLATFORMS="([^"]+)"$/m.exec(fs.readFileSync(path.join(ROOT, "docker", "ipxe-worker", "Dockerfile"), "utf8"))![1]!;
const BIOS_IPXE = "/usr/lib/ipxe/undionly.kpxe";
const UEFI_IPXE = "/usr/lib/ipxe/ipxe.efi";
const LAN_BINARIES = ["dnsmasq", "qemu-system-x86_64", "nats-server", "redis-server", "cpio", "busybox", "dropbear", "mmdebstrap", "openssl"];

function ipxeTarball(): string | null {
	const candidates = [process.env.IPXE_SOURCE_TARBALL, path.resolve(ROOT, "..", "shared", "vendor", "ipxe-2.0.0.tar.xz")];
	return candidates.find((file): file is string => !!file && fs.existsSync(file)) ?? null;
}

function missing(): string | null {
	const dockerd = dockerdMissing();
	if (dockerd) return dockerd;
	const namespaces = canMakeNamespaces();
	if (namespaces) return namespaces;
	const dirs = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"];
	for (const binary of LAN_BINARIES) if (!dirs.some((dir) => fs.existsSync(path.join(dir, binary)))) return `${binary} is not installed`;
	for (const file of [BIOS_IPXE, UEFI_IPXE]) if (!fs.existsSync(file)) return `${file} is missing`;
	if (!cloudKernel()) return "no Debian cloud kernel in /boot";
	const rgw = missingRadosgwBinaries();
	if (rgw.length) return `${rgw.join(", ")} not installed (radosgw)`;
	if (!seedTutorialPath()) return "the seed tutorial (../shared/seeds/000_*) is not beside the checkout";
	if (!fs.existsSync(path.join(ROOT, "packages", "cli", "dist", "main.js"))) return "the CLI is not built (npm run build)";
	return null;
}

const skipReason = missing();
if (skipReason) console.warn(`test/containers ${process.env.CI === "true" ? "cannot run" : "skipped"}: ${skipReason}`);
// In CI a suite that cannot run fails with its reason: a green run never hides skipped images.
if (skipReason && process.env.CI === "true") test("the container suite can run here", () => expect(skipReason).toBeNull());
const describeContainers = skipReason ? describe.skip : describe;

const timings: Record<string, number> = {};
const since = (started: number) => Math.round((Date.now() - started) / 1000);

describeContainers("images built and run on a private dockerd", () => {
	let engine: Dockerd;
	let built: { images: { image: string; bytes: number }[]; seconds: Record<string, number>; base: string };

	beforeAll(async () => {
		const started = Date.now();
		// CPP_TEST_DOCKER_HOST: an engine of yours with a warm build cache (left running); else a private one.
		engine = process.env.CPP_TEST_DOCKER_HOST ? attachDockerd(process.env.CPP_TEST_DOCKER_HOST) : await startDockerd();
		timings.dockerdStartS = since(started);
		// `npm run images`, pointed at this engine, with the pinned iPXE tarball served to the build.
		const tarball = ipxeTarball();
		const json = path.join(engine.dir, "images.json");
		const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-image-logs-"));
		const result = spawnSync(process.execPath, [path.join(ROOT, "docker", "build-images.mjs"), `--json=${json}`, `--log-dir=${logDir}`, "--jobs=2"], {
			cwd: ROOT,
			env: { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== "IPXE_PREPARE_PLATFORMS")), DOCKER_HOST: engine.host, DOCKER: dockerClient()!, ...(tarball ? { IPXE_SOURCE_TARBALL: tarball } : {}) },
			encoding: "utf8",
			timeout: 50 * 60_000,
			maxBuffer: 64 * 1024 * 1024,
		});
		const logs = fs.readdirSync(logDir).map((f) => `--- ${f}\n${fs.readFileSync(path.join(logDir, f), "utf8").slice(-3000)}`).join("\n");
		fs.rmSync(logDir, { recursive: true, force: true });
		if (result.status !== 0) throw new Error(`npm run images failed (${result.status}):\n${result.stdout}\n${result.stderr}\n${logs}`);
		console.log(result.stdout);
		built = JSON.parse(fs.readFileSync(json, "utf8"));
		timings.imagesS = since(started);
	}, 55 * 60_000);

	afterAll(async () => {
		const started = Date.now();
		await engine?.stop();
		timings.dockerdStopS = since(started);
		console.log(`test/containers timings (s): ${JSON.stringify(timings)}`);
	}, 120_000);

	it("builds every image under docker/ from debian:bookworm-slim, made here from Debian's packages; sizes reported", () => {
		expect(built.images.map((i) => i.image).sort()).toEqual([...IMAGE_DIRS.map(image), "debian:bookworm-slim"].sort());
		expect(["present", "pulled", "made"]).toContain(built.base);
		console.log(`image sizes (base ${built.base}; build seconds ${JSON.stringify(built.seconds)}):\n${built.images.map((i) => `  ${i.image.padEnd(40)} ${(i.bytes / 1e6).toFixed(0)} MB`).join("\n")}`);
		// Every image shares the base's layers: one debian:bookworm-slim under all of them.
		const baseLayers = JSON.parse(engine.docker(["image", "inspect", "--format", "{{json .RootFS.Layers}}", "debian:bookworm-slim"]).stdout);
		for (const dir of IMAGE_DIRS) {
			const layers = JSON.parse(engine.docker(["image", "inspect", "--format", "{{json .RootFS.Layers}}", image(dir)]).stdout);
			expect({ dir, base: layers[0] }).toEqual({ dir, base: baseLayers[0] });
		}
	});

	it("runs every image but the distributor as the unprivileged node user, each with a health check and its service", () => {
		for (const dir of IMAGE_DIRS) {
			const config = JSON.parse(engine.docker(["image", "inspect", "--format", "{{json .Config}}", image(dir)]).stdout);
			expect({ dir, user: config.User || "root" }).toEqual({ dir, user: dir === "distributor" ? "root" : "node" });
			expect(config.Healthcheck?.Test).toEqual(["CMD", "clusterplatform", "health"]);
			expect(config.Cmd[0]).toBe("clusterplatform");
		}
		const run = (dir: string, script: string) => engine.docker(["run", "--rm", "--net=host", "--entrypoint", "sh", image(dir), "-c", script]).stdout.trim();
		const nodeVersion = /^ARG NODE_VERSION=(\S+)$/m.exec(fs.readFileSync(path.join(ROOT, "docker", "node", "Dockerfile"), "utf8"))![1];
		expect(run("node", "id -un; node --version; clusterplatform --help >/dev/null && echo cli")).toBe(`node\nv${nodeVersion}\ncli`);
		// No toolchain in the runtime images: the compilers stayed in the build stages.
		expect(run("node", "command -v gcc g++ make python3 npm curl || echo none")).toBe("none");
		// The build's extra CA certificates were a secret: in no image.
		const extra = fs.existsSync("/usr/local/share/ca-certificates") ? fs.readdirSync("/usr/local/share/ca-certificates").filter((f) => f.endsWith(".crt")) : [];
		for (const crt of extra) {
			const line = fs.readFileSync(path.join("/usr/local/share/ca-certificates", crt), "utf8").split("\n").find((l) => /^[A-Za-z0-9+/]{60,}$/.test(l));
			if (!line) continue;
			for (const dir of ["node", "ipxe-worker"]) expect({ dir, crt, found: run(dir, `grep -rlF '${line}' /etc /usr/local /opt /app 2>/dev/null | head -1`) }).toEqual({ dir, crt, found: "" });
		}
		// The iPXE worker: the pinned source where setup puts it, its trees prepared at build time.
		expect(run("ipxe-worker", "cat /opt/clusterplatform/ipxe/.clusterplatform-ipxe-commit")).toBe(IPXE_COMMIT);
		const trees = run("ipxe-worker", "ls /opt/clusterplatform/ipxe-trees/*/").split("\n");
		for (const platform of PREPARED_PLATFORMS.split(" ")) expect(trees).toContain(platform);
		expect(run("ipxe-worker", "echo $IPXE_SOURCE_DIR")).toBe(MANIFEST_IPXE_SOURCE_DIR);
		for (const [dir, binaries] of Object.entries({ "grub-worker": "grub-mkstandalone mformat", "iso-worker": "xorriso unzip", "distributor": "dnsmasq ip ssh", "mirror-worker": "rsync xz bzip2", "syslinux-worker": "node" })) {
			expect(run(dir, `for b in ${binaries}; do command -v $b >/dev/null || echo missing $b; done`)).toBe("");
		}
	});

	it("builds the Node image's dev target (skaffold's provisioner--dev) from the same build stage", () => {
		const started = Date.now();
		const ca = fs.existsSync("/usr/local/share/ca-certificates") ? fs.readdirSync("/usr/local/share/ca-certificates").filter((f) => f.endsWith(".crt")) : [];
		const bundle = path.join(engine.dir, "ca.pem");
		fs.writeFileSync(bundle, ca.map((f) => fs.readFileSync(path.join("/usr/local/share/ca-certificates", f), "utf8")).join("\n"));
		const dev = `clusterplatform/node:${TAG}-dev`;
		engine.docker(["build", "--network", "host", "--secret", `id=ca-certificates,src=${bundle}`, "--target", "dev", "-f", path.join(ROOT, "docker", "node", "Dockerfile"), "-t", dev, ROOT], { timeoutMs: 15 * 60_000 });
		timings.devTargetS = since(started);
		const wrapper = engine.docker(["run", "--rm", "--entrypoint", "sh", dev, "-c", "id -un; head -1 /usr/local/bin/clusterplatform; clusterplatform --help >/dev/null && echo cli; npx tsc --version"]).stdout.trim().split("\n");
		expect(wrapper.slice(0, 3)).toEqual(["node", "#!/bin/sh", "cli"]);
		expect(wrapper[3]).toMatch(/^Version \d+\./);
		engine.docker(["rmi", dev]);
	}, 16 * 60_000);

	describe("the distributor image on a site LAN, started with the README's docker run line", () => {
		let lab: Lab;
		let dir: string;
		let lan: Lan;
		let siteEngine: Dockerd;
		let nats: ContainerNats;
		let base: string;
		let tiny: Lab["tiny"];
		let keys: Lab["keys"];
		let api: Lab["api"];
		let json: Lab["json"];
		let container: string;
		let distributorId: number;
		let mainscriptUrl: string;
		let biosUrl: string;
		let uefiUrl: string;
		let node: { id: number; ip: string };
		const guests: Guest[] = [];
		const hostname = os.hostname();

		const containerLog = () => siteEngine.docker(["logs", "--tail", "80", container], { allowFailure: true }).stdout + siteEngine.docker(["logs", "--tail", "80", container], { allowFailure: true }).stderr;

		beforeAll(async () => {
			const started = Date.now();
			lab = await startLab({
				name: "containers-lan",
				services: ["gateway", "mainscripts", "subscripts", "postbootscripts", "sshkeys", "sshkey", "localnodes", "scriptruns", "distributors", "boots"],
				bus: async (lan) => {
					nats = await startContainerNats(lan.hostIp, [SITE]);
					return { env: nats.env(null), stop: () => nats.stop() };
				},
			});
			({ dir, lan, base, tiny, keys, api, json } = lab);
			[biosUrl, uefiUrl] = (await Promise.all([lab.store.putFile("boot/undionly.kpxe", BIOS_IPXE), lab.store.putFile("boot/ipxe.efi", UEFI_IPXE)])).map((file) => file.url);
			const { subscript } = await lab.nodeChain(SITE);
			mainscriptUrl = (await lab.create("mainscripts", `#!ipxe\nchain ${subscript}\n`)).url;

			// The site's Docker engine runs on the distributor host: `--net=host` there is the LAN.
			// nsenter, not `ip netns exec`: only the network namespace changes (ip netns exec mounts a
			// sysfs of its own over /sys, hiding the cgroup file system the engine needs).
			siteEngine = await startDockerd({ name: "site", spawnIn: (command, args, options) => spawn("nsenter", [`--net=/run/netns/${lan.ns.distributor}`, command, ...args], options) });
			const loaded = Date.now();
			await new Promise<void>((resolve, reject) => {
				const save = engine.spawnDocker(["save", image("distributor")], { stdio: ["ignore", "pipe", "pipe"] });
				const load = siteEngine.spawnDocker(["load", "-q"], { stdio: ["pipe", "ignore", "pipe"] });
				save.stdout!.pipe(load.stdin!);
				let pending = 2;
				const done = (who: string) => (code: number | null) => (code === 0 ? --pending === 0 && resolve() : reject(new Error(`docker ${who} exited ${code}`)));
				save.on("close", done("save"));
				load.on("close", done("load"));
			});
			timings.distributorImageTransferS = since(loaded);
			const { NATS_USER, NATS_PASSWORD } = nats.credentials(SITE);
			// README.md's line, unchanged but for the addresses (the seed's line plus the bus credential).
			container = siteEngine
				.docker([
					"run",
					"-e", `TRANSPORTER=${nats.url}`,
					"-e", `NATS_USER=${NATS_USER}`, "-e", `NATS_PASSWORD=${NATS_PASSWORD}`,
					"-e", `NATS_TLS_CA=${nats.caPem}`,
					"-e", `CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID=${SITE}`,
					"-e", `PUBLIC_URL=${base}`,
					"--cap-add=NET_ADMIN",
					"--net=host",
					"-d",
					image("distributor"),
				])
				.stdout.trim();
			const row = await lab.distributorOnline(SITE, siteNodeId(SITE, `${hostname}-1`), containerLog, 90_000);
			distributorId = row.id;
			timings.distributorSetupS = since(started);
		}, 300_000);

		afterAll(async () => {
			for (const guest of guests) await stopChild(guest.child, "SIGTERM", 2000);
			await siteEngine?.stop();
			await lab?.stop();
		}, 120_000);

		it("takes the seed's distributor calls through the API and answers PXE from the container's dnsmasq", async () => {
			const res = await api(`/distributors/${distributorId}`, {
				method: "PUT",
				json: { ipxePxeUefiUrl: uefiUrl, ipxePxeBiosUrl: biosUrl, artifactId: 1, device: lan.device, range: lan.routerIp, scriptUrl: mainscriptUrl },
			});
			expect(res.status).toBe(200);
			const on = await api(`/distributors/${distributorId}/status`, { method: "PUT", json: { on: true, artifactId: 1 } });
			expect({ status: on.status, body: await on.json() }).toMatchObject({ status: 200, body: { on: true, state: "on" } });
			expect((await tftpGet(lan.distributorIp, "undionly.kpxe")).equals(fs.readFileSync(BIOS_IPXE))).toBe(true);
		});

		it("PXE-boots a BIOS guest through the container to a registered node, and runs a script on it over SSH from the container", async () => {
			const started = Date.now();
			lan.addTap("tb");
			const guest = bootGuest(lan, { firmware: "bios", tap: "tb", mac: "52:54:00:c0:14:01", dir, maxSeconds: 300 });
			guests.push(guest);
			const address = await eventually(() => /CPP: address (\S+)/.exec(guest.serial())?.[1], 240_000, "the guest's address").catch((err: Error) => {
				throw new Error(`${err.message}\n--- serial ---\n${guest.serial().slice(-3000)}\n--- container ---\n${containerLog()}`);
			});
			node = await eventually(async () => {
				const page = await json(`/localnodes?search=${address}&searchFields=ip`);
				return page.rows.find((r: { ip: string }) => r.ip === address);
			}, 60_000, "the guest registered");
			timings.guestRegisteredS = since(started);
			expect(node).toMatchObject({ artifactId: SITE, pingable: true });
			const { presented } = await json(`/localnodes/${node.id}/hostkey`);
			expect((await api(`/localnodes/${node.id}/hostkey`, { method: "PUT", json: { hostKey: presented } })).status).toBe(200);
			const script = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "uname -r; echo from-the-container", privateKey: keys.privateKey } });
			expect(script.status).toBe(200);
			expect(await script.json()).toMatchObject({ code: 0, stdout: `${tiny.release}\nfrom-the-container\n` });
			// The SSH client ran in the container (the distributor's process is the container's).
			const audit = (await json(`/scriptruns?search=${node.ip}&searchFields=ip&sort=-id`)).rows;
			expect(audit[0]).toMatchObject({ status: "done", code: 0, artifactId: SITE });
		}, 360_000);

		it("turns healthy: the image's HEALTHCHECK (clusterplatform health over NATS) passes", async () => {
			const health = await eventually(() => {
				const state = JSON.parse(siteEngine.docker(["inspect", "--format", "{{json .State.Health}}", container]).stdout);
				return state?.Status === "healthy" ? state : state?.Status === "unhealthy" ? Promise.reject(new Error(JSON.stringify(state))) : undefined;
			}, 120_000, "container healthy");
			expect(health.Log.at(-1).ExitCode).toBe(0);
			expect(siteEngine.docker(["exec", container, "clusterplatform", "health"], { allowFailure: true }).status).toBe(0);
		}, 150_000);

		it("restarts without losing anything or duplicating its distributor row", async () => {
			const before = (await json(`/distributors?search=${SITE}&searchFields=artifactId`)).rows;
			expect(before).toHaveLength(1);
			const started = Date.now();
			siteEngine.docker(["stop", container], { timeoutMs: 60_000 });
			await eventually(async () => (await json(`/distributors/${distributorId}`)).online === false, 60_000, "offline while stopped");
			siteEngine.docker(["start", container]);
			const back = await eventually(async () => {
				const row = await json(`/distributors/${distributorId}`);
				return row.online && row.state === "on" ? row : undefined;
			}, 120_000, "back online and on").catch((err: Error) => {
				throw new Error(`${err.message}\n${containerLog()}`);
			});
			timings.distributorRestartS = since(started);
			expect(back).toMatchObject({ id: distributorId, device: lan.device, scriptUrl: mainscriptUrl, on: true });
			expect((await json(`/distributors?search=${SITE}&searchFields=artifactId`)).rows).toHaveLength(1);
			expect((await tftpGet(lan.distributorIp, "undionly.kpxe")).equals(fs.readFileSync(BIOS_IPXE))).toBe(true);
			const again = await api(`/localnodes/${node.id}/script`, { method: "PUT", json: { script: "echo again", privateKey: keys.privateKey } });
			expect(await again.json()).toMatchObject({ code: 0, stdout: "again\n" });
		}, 240_000);
	});

	describe("the cluster as containers on the host's network, over NATS with TLS and credentials", () => {
		let nats: ContainerNats;
		let redis: TestServer;
		let rgw: TestRadosgw;
		let gatewayUrl: string;
		let proxy: http.Server;
		let proxyPort: number;
		const proxied: string[] = [];
		const token = generateToken();
		const bucket = "cpp-containers";
		let shared: Record<string, string>;
		let scratch: string;

		const api = (pathname: string, init: { method?: string; json?: unknown } = {}) =>
			fetch(`${gatewayUrl}/api${pathname}`, {
				method: init.method ?? "GET",
				headers: { Authorization: `Bearer ${token}`, ...(init.json === undefined ? {} : { "Content-Type": "application/json" }) },
				body: init.json === undefined ? undefined : JSON.stringify(init.json),
			});
		const logsOf = (name: string) => {
			const out = engine.docker(["logs", "--tail", "60", name], { allowFailure: true });
			const state = engine.docker(["inspect", "--format", "{{.State.Status}} exit {{.State.ExitCode}} {{.State.Error}} oom {{.State.OOMKilled}}", name], { allowFailure: true }).stdout.trim();
			return `--- ${name} (${state})\n${out.stdout}${out.stderr}`;
		};
		/** One pod: its image's container with the manifests' environment, on the host's network. */
		const pod = (name: string, dir: string, services: string[], extra: Record<string, string> = {}) => {
			const env = { ...shared, NODE_ID: name, ...extra };
			engine.docker(["run", "-d", "--name", name, "--net=host", ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]), image(dir), "clusterplatform", "start", ...services]);
		};

		beforeAll(async () => {
			const started = Date.now();
			scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-containers-cluster-"));
			[nats, redis, rgw] = await Promise.all([startContainerNats("127.0.0.1", []), startRedis({ password: generateToken() }), startRadosgw()]);
			const port = await freePort();
			gatewayUrl = `http://127.0.0.1:${port}`;
			// A QEMU guest reaches the gateway only through this recording proxy (slirp's guestfwd).
			proxyPort = await freePort();
			proxy = http.createServer((req, res) => {
				proxied.push(req.url ?? "/");
				const upstream = http.request(`${gatewayUrl}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
					res.writeHead(answer.statusCode ?? 502, answer.headers);
					answer.pipe(res);
				});
				upstream.on("error", () => res.writeHead(502).end());
				req.pipe(upstream);
			});
			await new Promise<void>((resolve) => proxy.listen(proxyPort, "127.0.0.1", resolve));
			shared = {
				...nats.env(null),
				REDIS_URL: redis.url,
				...rgw.env(bucket),
				S3_REGION: "us-east-1",
				S3_PUBLIC_URL: `http://127.0.0.1:${rgw.port}`,
				PUBLIC_URL: `http://10.0.2.100:${proxyPort}`,
				LOG_LEVEL: "warn",
				DATABASE_URL: await freshPostgresDatabase(),
				API_TOKENS: tokenEntry("operator", token, false),
				SECRETS_KEY: generateToken(),
				TUNNEL_PUBLIC_HOST: "127.0.0.1",
			};
			pod("cpp-registries", "node", ["mainscripts", "subscripts", "kickstarts", "prebootscripts", "postbootscripts", "sshkeys", "sshkey", "localnodes"]);
			pod("cpp-managers", "node", ["ipxes", "grubs", "syslinuxs", "isos"], { IPXE_SOURCE_DIR: MANIFEST_IPXE_SOURCE_DIR });
			pod("cpp-ipxes-worker-a", "ipxe-worker", ["ipxes-worker"]);
			pod("cpp-grubs-worker", "grub-worker", ["grubs-worker"]);
			pod("cpp-syslinuxs-worker", "syslinux-worker", ["syslinuxs-worker"]);
			pod("cpp-isos-worker", "iso-worker", ["isos-worker"]);
			pod("cpp-gateway", "node", ["gateway"], { PORT: String(port), HOST: "127.0.0.1" });
			await eventually(
				async () => (await Promise.all(["/mainscripts", "/ipxes", "/grubs", "/syslinuxs", "/isos"].map((p) => api(p)))).every((r) => r.status === 200),
				120_000,
				"every tier reachable through the containerised gateway",
			).catch((err: Error) => {
				throw new Error(`${err.message}\n${["cpp-gateway", "cpp-registries", "cpp-managers", "cpp-ipxes-worker-a", "cpp-isos-worker"].map(logsOf).join("\n")}`);
			});
			timings.clusterUpS = since(started);
		}, 300_000);

		afterAll(async () => {
			for (const name of engine?.docker(["ps", "-aq"], { allowFailure: true }).stdout.split("\n").filter(Boolean) ?? []) engine.docker(["rm", "-f", name], { allowFailure: true });
			await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
			await Promise.all([nats?.stop(), redis?.stop(), rgw?.stop()]);
			if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
		}, 120_000);

		async function finished(entity: string, id: number, timeoutMs = 300_000) {
			return eventually(async () => {
				const row = (await (await api(`/${entity}/${id}`)).json()) as any;
				return ["done", "failed"].includes(row.status) ? row : undefined;
			}, timeoutMs, `${entity} ${id} finished`).catch((err: Error) => {
				throw new Error(`${err.message}\n${["cpp-managers", "cpp-ipxes-worker-a", "cpp-grubs-worker", "cpp-syslinuxs-worker", "cpp-isos-worker"].map(logsOf).join("\n")}`);
			});
		}

		it("runs the seed's tutorial through the containerised gateway to a downloaded ISO that boots in QEMU", async () => {
			const started = Date.now();
			// The seed's calls, its example host replaced by the address a QEMU guest reaches the gateway at.
			const guestBase = `http://10.0.2.100:${proxyPort}`;
			const calls = seedCallsFor(guestBase, fs.readFileSync(seedTutorialPath()!, "utf8"));
			const post = async (call: SeedCall) => {
				const pathname = new URL(call.url).pathname.replace(/^\/api/, "");
				const res = await api(pathname, { method: "POST", json: call.body });
				const body = (await res.json()) as { id: number };
				expect({ call: call.title, status: res.status }).toEqual({ call: call.title, status: 201 });
				return { call, id: body.id as number, entity: pathname.slice(1) };
			};
			const builders = calls.filter((c) => c.method === "POST" && /\/api\/(ipxes|grubs|syslinuxs)$/.test(c.url));
			expect(builders.length).toBe(10);
			const created: { call: SeedCall; id: number; entity: string }[] = [];
			for (const call of builders) created.push(await post(call));
			for (const call of calls.filter((c) => c.method === "POST" && /\/api\/(mainscripts|subscripts)$/.test(c.url))) await post(call);
			const rows = await Promise.all(created.map((c) => finished(c.entity, c.id)));
			for (const row of rows) expect({ id: row.id, status: row.status, error: row.error }).toEqual({ id: row.id, status: "done", error: null });
			timings.tutorialPartsS = since(started);
			const byTitle = (title: string) => rows[created.findIndex((c) => c.call.title === title)]!.url as string;
			// The seed's ISO body, its part URLs those of the parts just built.
			const isoCall = calls.find((c) => c.method === "POST" && /\/api\/isos$/.test(c.url))!;
			const body = {
				...(isoCall.body as Record<string, unknown>),
				ipxeUefiUrl: byTitle("Create UEFI iPXE network bootloader for ISO"),
				ipxeBiosUrl: byTitle("Create BIOS iPXE network bootloader for ISO"),
				grubImgUrl: byTitle("Create GRUB media bootloader IMG for ISO"),
				grubEfiX64Url: byTitle("Create GRUB media bootloader UEFI x64 for ISO"),
				grubEfiX86Url: byTitle("Create GRUB media bootloader UEFI x86 for ISO"),
				ldLinuxUrl: byTitle("Create SYSLINUX media bootloader Ldlinux for ISO"),
				isolinuxBinUrl: byTitle("Create SYSLINUX media bootloader IsolinuxBin for ISO"),
				isohdpfxBinUrl: byTitle("Create SYSLINUX media bootloader IsohdpfxBin for ISO"),
			};
			const iso = await post({ ...isoCall, body });
			const isoRow = await finished("isos", iso.id);
			expect(isoRow).toMatchObject({ status: "done", error: null });
			expect(isoRow.url.startsWith(`http://127.0.0.1:${rgw.port}/${bucket}/`)).toBe(true);
			// "Get ISO": curl -o dist.iso <url>
			const file = path.join(scratch, "dist.iso");
			fs.writeFileSync(file, Buffer.from(await (await fetch(isoRow.url)).arrayBuffer()));
			expect(fs.readFileSync(file).subarray(0x8001, 0x8006).toString("latin1")).toBe("CD001");
			timings.tutorialIsoS = since(started);

			// BIOS from CD: isolinux → the iPXE built in the ipxe-worker container with the seed's
			// embedded script → `dhcp` → the mainscript → the subscript, all through the gateway. The
			// guest's network reaches nothing but the proxy (restrict=on): the subscript's Fedora
			// download goes nowhere.
			const before = proxied.length;
			const qemu = startQemu(scratch, ["-cdrom", file, "-boot", "d", "-netdev", `user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:${proxyPort}-tcp:127.0.0.1:${proxyPort}`, "-device", "e1000,netdev=n0"], 180_000);
			try {
				await eventually(() => proxied.slice(before).includes("/api/subscripts/1"), 170_000, "the ISO's chain reached the subscript").catch((err: Error) => {
					throw new Error(`${err.message}; requests: ${JSON.stringify(proxied.slice(before))}\nserial:\n${qemu.serial().slice(-2000)}`);
				});
			} finally {
				await qemu.stop();
			}
			expect(proxied.slice(before)).toEqual(expect.arrayContaining(["/api/mainscripts/1", "/api/subscripts/1"]));
			timings.isoBootS = since(started);
		}, 900_000);

		it("finishes a build on another worker container when the one building it is killed", async () => {
			const queue = new Queue("ipxes", { connection: { url: redis.url } as never });
			try {
				const started = Date.now();
				// A script no build had: a real compile in the worker's prepared tree.
				const res = await api("/ipxes", { method: "POST", json: { script: `#!ipxe\necho killed worker ${Date.now()}\nshell\n`, platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" } });
				expect(res.status).toBe(201);
				const { id } = (await res.json()) as { id: number };
				await eventually(async () => (await queue.getActiveCount()) > 0, 120_000, "worker a took the build");
				const interrupted = (await queue.getActive()).map((job) => job.id!);
				engine.docker(["kill", "cpp-ipxes-worker-a"]);
				expect(((await (await api(`/ipxes/${id}`)).json()) as { status: string }).status).not.toBe("done");
				pod("cpp-ipxes-worker-b", "ipxe-worker", ["ipxes-worker"]);
				const row = await finished("ipxes", id, 300_000);
				expect(row).toMatchObject({ status: "done", error: null });
				for (const jobId of interrupted) {
					const job = await queue.getJob(jobId);
					expect(job?.stalledCounter ?? 0).toBeGreaterThanOrEqual(1);
				}
				expect((await fetch(row.url)).status).toBe(200);
				timings.workerKilledS = since(started);
			} finally {
				await queue.close();
			}
		}, 420_000);
	});
});
