import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { CATALOGUE } from "@clusterplatform/cli";
import { CONFIG_VARIABLES, generateToken, Sealer, tokenEntry, TokenSet } from "@clusterplatform/core";
import { imageOf, renderServicesYaml, SERVICES_FILE } from "../../k8s/generate";
import { lintDockerfile } from "./dockerfile-lint";

/**
 * Deployment files checked without a cluster or a Docker engine: every manifest against the
 * Kubernetes schemas, the env they set against what the code reads, the services they run
 * against the CLI catalogue, skaffold's images against docker/, and the Dockerfiles' basics.
 */
const ROOT = path.resolve(__dirname, "..", "..");
const K8S = path.join(ROOT, "k8s");

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: any; data?: Record<string, string>; stringData?: Record<string, string> };

function yamlFiles(dir: string): string[] {
	return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
		const full = path.join(dir, entry.name);
		if (entry.isDirectory()) return yamlFiles(full);
		return /\.ya?ml$/.test(entry.name) ? [full] : [];
	});
}

const MANIFEST_FILES = yamlFiles(K8S).filter((file) => path.basename(file) !== "kustomization.yaml");
const KUSTOMIZATIONS = yamlFiles(K8S).filter((file) => path.basename(file) === "kustomization.yaml");

function loadObjects(file: string): K8sObject[] {
	const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
	for (const doc of docs) if (doc.errors.length) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
	return docs.map((doc) => doc.toJS()).filter((object) => object !== null);
}

const OBJECTS: K8sObject[] = MANIFEST_FILES.flatMap(loadObjects);

function validateWithSchemas(objects: unknown[]): { kind: string; name: string | null; error: string | null }[] {
	const output = execFileSync(process.execPath, [path.join(__dirname, "k8s-validate.mjs")], { input: JSON.stringify(objects), cwd: ROOT, timeout: 60_000 });
	return JSON.parse(output.toString());
}

/** Every env variable the provisioner reads: core's declared list (loadConfig refuses to read any other). */
function envNamesTheCodeReads(): Set<string> {
	return new Set<string>(CONFIG_VARIABLES);
}

/** Workloads (Deployment, DaemonSet) and their containers. */
function workloads(objects: K8sObject[] = OBJECTS) {
	return objects.filter((o) => ["Deployment", "DaemonSet", "StatefulSet"].includes(o.kind));
}
function containersOf(workload: K8sObject): any[] {
	return workload.spec.template.spec.containers;
}

const SKAFFOLD = parseYaml(fs.readFileSync(path.join(ROOT, "skaffold.yaml"), "utf8"));
const SKAFFOLD_IMAGES: string[] = SKAFFOLD.build.artifacts.map((a: { image: string }) => a.image);
const isOurImage = (image: string) => SKAFFOLD_IMAGES.includes(image);

/** Env names a container sets: its env entries and the keys of the ConfigMaps/Secrets it imports. */
function envNamesOf(container: any, objects: K8sObject[] = OBJECTS): string[] {
	const names: string[] = (container.env ?? []).map((e: { name: string }) => e.name);
	for (const source of container.envFrom ?? []) {
		const ref = source.configMapRef ?? source.secretRef;
		const kind = source.configMapRef ? "ConfigMap" : "Secret";
		const object = objects.find((o) => o.kind === kind && o.metadata.name === ref.name);
		if (!object) throw new Error(`${container.name}: envFrom ${kind} ${ref.name} is not in k8s/`);
		names.push(...Object.keys({ ...object.data, ...object.stringData }));
	}
	return names;
}

/** The services a container runs: `clusterplatform start <names>`, or the CLI's own `distributor` command. */
function servicesRunBy(args: string[]): string[] {
	if (args[0] !== "clusterplatform") return [];
	if (args[1] === "start") return args.slice(2);
	if (args[1] === "distributor") {
		// What `clusterplatform distributor` starts, read from the CLI so this cannot go stale.
		const main = fs.readFileSync(path.join(ROOT, "packages", "cli", "src", "main.ts"), "utf8");
		const started = /async function distributor\(\)[\s\S]*?start\(\[([^\]]*)\]\)/.exec(main)?.[1] ?? "";
		return [...started.matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
	}
	return [];
}

describe("Kubernetes manifests", () => {
	it("parse, and every object is valid against the Kubernetes schemas", () => {
		expect(MANIFEST_FILES.length).toBeGreaterThan(5);
		const results = validateWithSchemas(OBJECTS);
		expect(results.filter((r) => r.error)).toEqual([]);
		expect(results).toHaveLength(OBJECTS.length);
	});

	it("the schema validator rejects broken objects (negative control)", () => {
		const gateway = structuredClone(OBJECTS.find((o) => o.kind === "Deployment" && o.metadata.name === "gateway")!);
		gateway.spec.replicas = "two";
		const service = structuredClone(OBJECTS.find((o) => o.kind === "Service" && o.metadata.name === "gateway")!);
		delete service.spec.ports[0].port;
		const results = validateWithSchemas([gateway, service, { apiVersion: "v1", kind: "Nonsense", metadata: { name: "x" } }]);
		expect(results[0]!.error).toMatch(/replicas/);
		expect(results[1]!.error).toMatch(/port/);
		expect(results[2]!.error).toMatch(/unknown kind/);
	});

	it(`${SERVICES_FILE} is generated from the catalogue and current (regenerate with \`npm run k8s\`)`, () => {
		expect(fs.readFileSync(path.join(K8S, SERVICES_FILE), "utf8")).toBe(renderServicesYaml());
	});

	it("every service of the CLI catalogue runs in some workload, with its toolchain's image", () => {
		const running = new Map<string, string>();
		for (const workload of workloads()) for (const c of containersOf(workload)) for (const name of servicesRunBy(c.args ?? [])) running.set(name, c.image);
		for (const name of Object.keys(CATALOGUE)) {
			expect({ name, runs: running.has(name) }).toEqual({ name, runs: true });
			expect({ name, image: running.get(name) }).toEqual({ name, image: imageOf(name) });
		}
		for (const name of running.keys()) expect(Object.keys(CATALOGUE)).toContain(name);
	});

	it("our containers set only env variables the code reads", () => {
		const known = envNamesTheCodeReads();
		// Derived from the sources: loadConfig's variables are all there.
		for (const name of ["PORT", "TRANSPORTER", "DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "S3_USE_SSL", "NODE_ID", "CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID"]) expect(known).toContain(name);
		let checked = 0;
		for (const workload of workloads()) {
			for (const container of containersOf(workload).filter((c) => isOurImage(c.image))) {
				const unknown = envNamesOf(container).filter((name) => !known.has(name));
				expect({ container: container.name, unknown }).toEqual({ container: container.name, unknown: [] });
				checked++;
			}
		}
		expect(checked).toBe(Object.keys(CATALOGUE).length);
		// Negative control: a misspelt variable is caught.
		const typo = { name: "x", env: [{ name: "DATABSE_URL", value: "postgres://" }] };
		expect(envNamesOf(typo).filter((name) => !known.has(name))).toEqual(["DATABSE_URL"]);
	});

	it("the iPXE manager and worker agree on the source tree (part of the content address), where the worker image has it", () => {
		const envOf = (service: string) => workloads().flatMap(containersOf).find((c) => servicesRunBy(c.args ?? []).includes(service))?.env ?? [];
		const sourceDir = (service: string) => envOf(service).find((e: { name: string }) => e.name === "IPXE_SOURCE_DIR")?.value;
		expect(sourceDir("ipxes")).toBeDefined();
		expect(sourceDir("ipxes")).toBe(sourceDir("ipxes-worker"));
		expect(fs.readFileSync(path.join(ROOT, "docker/ipxe-worker/Dockerfile"), "utf8")).toContain(`IPXE_SOURCE_DIR=${sourceDir("ipxes-worker")}`);
	});

	it("every container has liveness and readiness probes and resource requests and limits", () => {
		for (const workload of workloads()) {
			for (const c of containersOf(workload)) {
				const summary = { container: `${workload.metadata.name}/${c.name}`, liveness: !!c.livenessProbe, readiness: !!c.readinessProbe, requests: !!c.resources?.requests, limits: !!c.resources?.limits };
				expect(summary).toEqual({ ...summary, liveness: true, readiness: true, requests: true, limits: true });
			}
		}
		const gateway = containersOf(OBJECTS.find((o) => o.kind === "Deployment" && o.metadata.name === "gateway")!)[0];
		expect(gateway.readinessProbe.httpGet.path).toBe("/api/health");
		expect(gateway.livenessProbe.httpGet.path).toBe("/api/health");
		// Processes without HTTP are probed with `clusterplatform health` (a NATS ping of NODE_ID = pod name).
		for (const workload of workloads().filter((w) => containersOf(w).some((c) => isOurImage(c.image)) && w.metadata.name !== "gateway")) {
			const c = containersOf(workload)[0];
			expect(c.livenessProbe.exec.command).toEqual(["clusterplatform", "health"]);
			expect(c.env).toContainEqual({ name: "NODE_ID", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } });
		}
	});

	it("exposes the gateway on NodePort 30002 and an Ingress, NATS on 30001, MinIO on 30003", () => {
		const nodePort = (service: string) => OBJECTS.find((o) => o.kind === "Service" && o.metadata.name === service)?.spec.ports.find((p: any) => p.nodePort)?.nodePort;
		expect(nodePort("gateway")).toBe(30002);
		expect(nodePort("nats")).toBe(30001);
		expect(nodePort("minio")).toBe(30003);
		const ingress = OBJECTS.find((o) => o.kind === "Ingress")!;
		expect(ingress.spec.rules[0].http.paths[0].backend.service.name).toBe("gateway");
	});

	it("keeps Redis (append-only), PostgreSQL and MinIO data on persistent volume claims", () => {
		const claims = new Set(OBJECTS.filter((o) => o.kind === "PersistentVolumeClaim").map((o) => o.metadata.name));
		for (const name of ["redis", "postgres", "minio"]) {
			const workload = OBJECTS.find((o) => o.kind === "Deployment" && o.metadata.name === name)!;
			const volumes = workload.spec.template.spec.volumes.map((v: any) => v.persistentVolumeClaim?.claimName);
			expect(volumes.some((claim: string) => claims.has(claim))).toBe(true);
			expect(containersOf(workload)[0].volumeMounts.length).toBeGreaterThan(0);
		}
		const redis = containersOf(OBJECTS.find((o) => o.metadata.name === "redis" && o.kind === "Deployment")!)[0];
		expect(redis.args.join(" ")).toMatch(/--appendonly yes/);
	});

	it("the example Secret's token and sealing-key placeholders are refused by the code, naming the variable", () => {
		const secret = OBJECTS.find((o) => o.kind === "Secret" && o.metadata.name === "clusterplatform-secrets")!.stringData!;
		expect(() => TokenSet.load({ apiTokens: secret.API_TOKENS!, tokensFile: path.join(os.tmpdir(), "cpp-no-such-tokens-file") })).toThrow(/API_TOKENS/);
		expect(() => Sealer.forDataDir(secret.SECRETS_KEY!, os.tmpdir())).toThrow(/SECRETS_KEY/);
		// Negative control: well-formed values are accepted.
		expect(TokenSet.load({ apiTokens: tokenEntry("admin", generateToken(), false), tokensFile: path.join(os.tmpdir(), "cpp-no-such-tokens-file") }).size).toBe(1);
		expect(() => Sealer.forDataDir(generateToken(), os.tmpdir())).not.toThrow();
	});

	it("the distributor runs with host networking and NET_ADMIN", () => {
		const distributor = workloads().find((w) => containersOf(w).some((c) => servicesRunBy(c.args ?? []).includes("distributor-worker")))!;
		expect(distributor.spec.template.spec.hostNetwork).toBe(true);
		expect(containersOf(distributor)[0].securityContext.capabilities.add).toContain("NET_ADMIN");
	});

	it("overlay patches match objects of the base and their JSON patch paths exist (replace) or have a parent (add)", () => {
		const matches = (object: K8sObject, target: { kind?: string; name?: string; labelSelector?: string }) => {
			if (target.kind && object.kind !== target.kind) return false;
			if (target.name && object.metadata.name !== target.name) return false;
			if (!target.labelSelector) return true;
			const labels = object.metadata.labels ?? {};
			return target.labelSelector.split(/,(?![^(]*\))/).every((term) => {
				const set = /^\s*(\S+)\s+in\s+\(([^)]*)\)\s*$/.exec(term);
				if (set) return set[2]!.split(",").map((v) => v.trim()).includes(labels[set[1]!] ?? "");
				const [key, value] = term.split("=").map((t) => t.trim());
				return labels[key!] === value;
			});
		};
		const resolve = (object: unknown, pointer: string): { parent: any; key: string } | null => {
			const parts = pointer.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
			let node: any = object;
			for (const part of parts.slice(0, -1)) {
				if (node === null || typeof node !== "object" || !(part in node)) return null;
				node = node[part];
			}
			return node !== null && typeof node === "object" ? { parent: node, key: parts[parts.length - 1]! } : null;
		};
		let applied = 0;
		for (const file of KUSTOMIZATIONS) {
			for (const patch of parseYaml(fs.readFileSync(file, "utf8")).patches ?? []) {
				const targets = OBJECTS.filter((object) => matches(object, patch.target));
				expect({ file: path.relative(ROOT, file), target: patch.target, matched: targets.length > 0 }).toMatchObject({ matched: true });
				for (const object of targets) {
					for (const op of parseYaml(patch.patch) as { op: string; path: string }[]) {
						const at = resolve(object, op.path);
						const ok = op.op === "add" ? at !== null && (op.path.endsWith("/-") ? Array.isArray(at.parent) : true) : at !== null && at.key in at.parent;
						expect({ object: object.metadata.name, op: op.op, path: op.path, ok }).toMatchObject({ ok: true });
						applied++;
					}
				}
			}
		}
		expect(applied).toBeGreaterThan(0);
	});

	it("kustomizations list only files that exist, and base lists every manifest in it", () => {
		for (const file of KUSTOMIZATIONS) {
			const kustomization = parseYaml(fs.readFileSync(file, "utf8"));
			for (const resource of kustomization.resources ?? []) expect(fs.existsSync(path.resolve(path.dirname(file), resource))).toBe(true);
		}
		const base = parseYaml(fs.readFileSync(path.join(K8S, "base", "kustomization.yaml"), "utf8"));
		const inBase = fs.readdirSync(path.join(K8S, "base")).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
		expect([...base.resources].sort()).toEqual(inBase.sort());
	});
});

describe("skaffold.yaml", () => {
	it("is a v4beta config with the seed's profiles, kustomize manifests that exist", () => {
		expect(SKAFFOLD.apiVersion).toMatch(/^skaffold\/v4beta\d+$/);
		const profiles = SKAFFOLD.profiles.map((p: { name: string }) => p.name);
		expect(profiles).toEqual(expect.arrayContaining(["provisioner--dev", "provisioner--prod"]));
		const paths = [SKAFFOLD.manifests, ...SKAFFOLD.profiles.map((p: any) => p.manifests)].filter(Boolean).flatMap((m: any) => m.kustomize.paths);
		for (const p of paths) expect(fs.existsSync(path.join(ROOT, p, "kustomization.yaml"))).toBe(true);
		// The dev profile syncs sources into the dev target of the Node image.
		const dev = SKAFFOLD.profiles.find((p: any) => p.name === "provisioner--dev");
		expect(dev.patches).toContainEqual({ op: "replace", path: "/build/artifacts/0/docker/target", value: "dev" });
		expect(fs.readFileSync(path.join(ROOT, "docker/node/Dockerfile"), "utf8")).toMatch(/^FROM .* AS dev$/m);
	});

	it("builds every image the manifests use, each from a Dockerfile that exists; BASE_IMAGE is the Node image", () => {
		const used = new Set(workloads().flatMap((w) => containersOf(w).map((c) => c.image)).filter((image) => image.startsWith("clusterplatform/")));
		for (const image of used) expect(SKAFFOLD_IMAGES).toContain(image);
		for (const artifact of SKAFFOLD.build.artifacts) {
			const dockerfile = path.join(ROOT, artifact.context ?? ".", artifact.docker.dockerfile);
			expect({ image: artifact.image, exists: fs.existsSync(dockerfile) }).toEqual({ image: artifact.image, exists: true });
			for (const required of artifact.requires ?? []) {
				expect(SKAFFOLD_IMAGES).toContain(required.image);
				expect(lintDockerfile(fs.readFileSync(dockerfile, "utf8")).globalArgs).toHaveProperty(required.alias);
			}
		}
	});
});

describe("Dockerfiles", () => {
	const files = fs.readdirSync(path.join(ROOT, "docker")).map((dir) => path.join(ROOT, "docker", dir, "Dockerfile")).filter((f) => fs.existsSync(f));

	it.each(files.map((f) => [path.relative(ROOT, f), f]))("%s: pinned bases, no remote ADD, non-root, HEALTHCHECK, a CMD that starts catalogue services", (_name, file) => {
		const content = fs.readFileSync(file, "utf8");
		// The distributor alone runs as root: dnsmasq binds DHCP/TFTP ports with NET_ADMIN; it says so.
		const rootAllowed = /NET_ADMIN/.test(content) && /--net=host/.test(content);
		const facts = lintDockerfile(content, { rootAllowed });
		expect(facts.problems).toEqual([]);
		if (!rootAllowed) expect(facts.user).not.toBeNull();
		const services = servicesRunBy(facts.cmd ?? []);
		expect(services.length).toBeGreaterThan(0);
		for (const service of services) expect(Object.keys(CATALOGUE)).toContain(service);
	});

	it("every RUN is valid shell (sh -n), the dev image's generated wrapper too", () => {
		const shellErrors = (command: string): string | null => {
			const result = spawnSync("sh", ["-n", "-c", command], { encoding: "utf8" });
			return result.status === 0 ? null : result.stderr.trim() || `exit ${result.status}`;
		};
		for (const file of files) {
			for (const command of lintDockerfile(fs.readFileSync(file, "utf8")).runCommands) {
				expect({ file: path.relative(ROOT, file), command: command.slice(0, 60), error: shellErrors(command) }).toMatchObject({ error: null });
			}
		}
		// The dev target writes its `clusterplatform` wrapper with printf: check the wrapper it writes.
		const devRun = lintDockerfile(fs.readFileSync(path.join(ROOT, "docker/node/Dockerfile"), "utf8")).runCommands.find((c) => c.includes("/usr/local/bin/clusterplatform") && c.startsWith("printf"))!;
		const printf = devRun.slice(0, devRun.indexOf("> /usr/local/bin/clusterplatform")).trim();
		const wrapper = spawnSync("sh", ["-c", printf], { encoding: "utf8" }).stdout;
		expect(wrapper.split("\n")[0]).toBe("#!/bin/sh");
		expect(shellErrors(wrapper)).toBeNull();
		expect(wrapper).toMatch(/case "\$1" in start\|distributor\)/);
		// Negative control.
		expect(shellErrors("echo 'unterminated")).not.toBeNull();
	});

	it("each worker image installs the Debian packages its services' binaries come from", () => {
		for (const artifact of SKAFFOLD.build.artifacts) {
			const facts = lintDockerfile(fs.readFileSync(path.join(ROOT, artifact.docker.dockerfile), "utf8"));
			for (const service of servicesRunBy(facts.cmd ?? [])) {
				for (const [binary, pkg] of CATALOGUE[service]!.binaries ?? []) {
					expect({ service, binary, installs: facts.aptPackages.includes(pkg) }).toEqual({ service, binary, installs: true });
				}
			}
		}
	});

	it("every image installs the Debian packages of every service the manifests run in it (the Node image's sshkey too)", () => {
		const dockerfileOf = (image: string) => SKAFFOLD.build.artifacts.find((a: { image: string }) => a.image === image)!.docker.dockerfile as string;
		let checked = 0;
		for (const container of workloads().flatMap(containersOf).filter((c) => isOurImage(c.image))) {
			const facts = lintDockerfile(fs.readFileSync(path.join(ROOT, dockerfileOf(container.image)), "utf8"));
			for (const service of servicesRunBy(container.args ?? container.command ?? [])) {
				for (const [binary, pkg] of CATALOGUE[service]!.binaries ?? []) {
					expect({ image: container.image, service, binary, installs: facts.aptPackages.includes(pkg) }).toEqual({ image: container.image, service, binary, installs: true });
					checked++;
				}
			}
		}
		expect(checked).toBeGreaterThan(5);
	});

	it("the lint catches what it should (negative control)", () => {
		const bad = lintDockerfile(`FROM node:latest\nFROM debian\nADD https://example.com/x.tgz /x\nUSER root\n`);
		expect(bad.problems).toEqual(
			expect.arrayContaining([
				"FROM node:latest: :latest is not pinned",
				"FROM debian: no tag (pin one)",
				"ADD of a remote URL: https://example.com/x.tgz /x",
				"no CMD in the final stage",
				"the final USER is root",
				"no HEALTHCHECK in the final stage",
			]),
		);
	});

	it("the iPXE worker image pins an iPXE release, warms its trees, and points IPXE_SOURCE_DIR at them", () => {
		const content = fs.readFileSync(path.join(ROOT, "docker/ipxe-worker/Dockerfile"), "utf8");
		expect(content).toMatch(/ARG IPXE_VERSION=v\d+\.\d+\.\d+/);
		// Pinned by commit and checked (git get-tar-commit-id), wherever the tarball comes from.
		expect(content).toMatch(/ARG IPXE_COMMIT=[0-9a-f]{40}\n/);
		expect(content).toMatch(/ARG IPXE_SOURCE_URL=https:\/\/github\.com\/ipxe\/ipxe\/archive\/\$\{IPXE_COMMIT\}\.tar\.gz/);
		expect(content).toMatch(/git get-tar-commit-id/);
		// The layout scripts/setup gives a host (packages/ipxe/src/build.ts INSTALLED_IPXE), prepared by the same script.
		expect(content).toMatch(/IPXE_SOURCE_DIR=\/opt\/clusterplatform\/ipxe /);
		expect(content).toMatch(/RUN node \/app\/packages\/ipxe\/dist\/prepare\.js/);
		const known = envNamesTheCodeReads();
		for (const name of ["IPXE_SOURCE_DIR", "IPXE_PREPARE_PLATFORMS"]) expect(known).toContain(name);
	});
});
