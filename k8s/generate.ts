/**
 * Generates k8s/base/services.yaml: one workload per service of the CLI catalogue, so the
 * manifests follow the code as services are added (test/deploy checks the file is current).
 *
 *   npm run k8s        (builds, then runs k8s/write.ts)
 *
 * Managers, registries and the gateway run the Node image; each worker runs the image of its
 * toolchain; the distributor worker runs as a DaemonSet on nodes that sit on a site's LAN.
 * Runs under jest on the sources and under Node's type stripping on the built packages.
 */
import { stringify } from "yaml";
import { CATALOGUE } from "@clusterplatform/cli";

export const SERVICES_FILE = "base/services.yaml";
export const NODE_IMAGE = "clusterplatform/node";
export const GATEWAY_PORT = 3000;
export const GATEWAY_NODE_PORT = 30002;

/** Worker services and the image that carries their toolchain (docker/<dir>/Dockerfile). */
export const WORKER_IMAGES: Record<string, string> = {
	"ipxes-worker": "clusterplatform/ipxe-worker",
	"grubs-worker": "clusterplatform/grub-worker",
	"syslinuxs-worker": "clusterplatform/syslinux-worker",
	"isos-worker": "clusterplatform/iso-worker",
	"mirrors-worker": "clusterplatform/mirror-worker",
	"distributor-worker": "clusterplatform/distributor",
	// The site's DNS (packages/dns) runs next to the distributor, from the same image (it has dnsmasq).
	"dns-worker": "clusterplatform/distributor",
};

/**
 * Variables particular to some services. The iPXE manager and worker must agree on whether builds
 * come from a source tree: it is part of the content address (packages/ipxe/src/index.ts); the
 * worker image has the tree at this path, where scripts/setup installs it on a host
 * (packages/ipxe/src/build.ts INSTALLED_IPXE), its prepared object trees beside it.
 */
export const IPXE_SOURCE_DIR = "/opt/clusterplatform/ipxe";
const SERVICE_ENV: Record<string, { name: string; value: string }[]> = {
	ipxes: [{ name: "IPXE_SOURCE_DIR", value: IPXE_SOURCE_DIR }],
	"ipxes-worker": [{ name: "IPXE_SOURCE_DIR", value: IPXE_SOURCE_DIR }],
};

/**
 * The tunnel endpoint listens where sites can dial it: on the host network of the node an operator
 * labels clusterplatform.io/tunnel-endpoint=true, SSH on TUNNEL_SSH_PORT and the forwarded ports of
 * TUNNEL_PORT_RANGE on that node's own addresses (a NodePort could not carry a thousand ports, and
 * would advertise another port than the one the server listens on).
 */
export const TUNNEL_SSH_PORT = 2222;
const HOST_NETWORK_SERVICES: Record<string, { nodeLabel: string; ports: { name: string; containerPort: number }[] }> = {
	"tunnel-server": { nodeLabel: "clusterplatform.io/tunnel-endpoint", ports: [{ name: "ssh", containerPort: TUNNEL_SSH_PORT }] },
};

/** Site-side services: not started by `clusterplatform start`, they have their own command. */
const OWN_COMMAND: Record<string, string[]> = { "distributor-worker": ["clusterplatform", "distributor"], "dns-worker": ["clusterplatform", "start", "dns-worker"], "tunnel-client": ["clusterplatform", "start", "tunnel-client"] };

type Tier = "gateway" | "api" | "worker" | "site";

export function imageOf(service: string): string {
	if (WORKER_IMAGES[service]) return WORKER_IMAGES[service]!;
	if (service.endsWith("-worker")) throw new Error(`${service}: a worker needs its toolchain image; add it to WORKER_IMAGES and docker/`);
	return NODE_IMAGE;
}

function tierOf(service: string): Tier {
	if (service === "gateway") return "gateway";
	if (OWN_COMMAND[service]) return "site";
	return service.endsWith("-worker") ? "worker" : "api";
}

const RESOURCES: Record<Tier, object> = {
	gateway: { requests: { cpu: "100m", memory: "128Mi" }, limits: { cpu: "1", memory: "512Mi" } },
	api: { requests: { cpu: "50m", memory: "128Mi" }, limits: { cpu: "500m", memory: "384Mi" } },
	// Toolchains are CPU-bound (make, xorriso, mkfs); iPXE compiles want the most.
	worker: { requests: { cpu: "250m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } },
	site: { requests: { cpu: "50m", memory: "128Mi" }, limits: { cpu: "500m", memory: "384Mi" } },
};

/**
 * Only the gateway listens on HTTP. Every other process is probed with `clusterplatform health`,
 * which sends the pod's own Moleculer node (NODE_ID = pod name) a PING packet over NATS: its PONG
 * proves the event loop and the transporter link both work (the probe joins no cluster).
 */
function probes(tier: Tier): Record<string, object> {
	if (tier === "gateway") {
		const http = { httpGet: { path: "/api/health", port: "http" }, timeoutSeconds: 5 };
		return { readinessProbe: { ...http, periodSeconds: 10, failureThreshold: 3 }, livenessProbe: { ...http, initialDelaySeconds: 15, periodSeconds: 20, failureThreshold: 3 } };
	}
	const exec = { exec: { command: ["clusterplatform", "health"] }, timeoutSeconds: 20 };
	return {
		readinessProbe: { ...exec, initialDelaySeconds: 10, periodSeconds: 60, failureThreshold: 2 },
		livenessProbe: { ...exec, initialDelaySeconds: 60, periodSeconds: 60, failureThreshold: 3 },
	};
}

function labels(service: string, tier: Tier): Record<string, string> {
	return { "app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "clusterplatform", "clusterplatform.io/tier": tier };
}

const NODE_ID_ENV = { name: "NODE_ID", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } };
const SHARED_ENV = [{ configMapRef: { name: "clusterplatform-env" } }, { secretRef: { name: "clusterplatform-secrets" } }];

function container(service: string, tier: Tier): Record<string, unknown> {
	const env: object[] = [NODE_ID_ENV, ...(SERVICE_ENV[service] ?? [])];
	if (tier === "gateway") env.push({ name: "PORT", value: String(GATEWAY_PORT) });
	if (tier === "site") env.push({ name: "CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID", valueFrom: { configMapKeyRef: { name: "clusterplatform-distributor", key: "artifactId" } } });
	return {
		name: service,
		image: imageOf(service),
		args: OWN_COMMAND[service] ?? ["clusterplatform", "start", service],
		envFrom: SHARED_ENV,
		env,
		...(tier === "gateway" ? { ports: [{ name: "http", containerPort: GATEWAY_PORT }] } : {}),
		...(HOST_NETWORK_SERVICES[service] ? { ports: HOST_NETWORK_SERVICES[service]!.ports } : {}),
		...probes(tier),
		resources: RESOURCES[tier],
		...(tier === "site"
			? // dnsmasq binds DHCP/TFTP (67, 69, 4011) on the LAN interface and drops its own privileges.
				{ securityContext: { runAsUser: 0, capabilities: { add: ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"] } } }
			: { securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } } }),
	};
}

function hostNetworkSpec(service: string): object {
	const hostNetwork = HOST_NETWORK_SERVICES[service];
	return hostNetwork ? { hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet", nodeSelector: { [hostNetwork.nodeLabel]: "true" } } : {};
}

function workload(service: string): object[] {
	const tier = tierOf(service);
	const meta = { name: service, labels: labels(service, tier) };
	const selector = { matchLabels: { "app.kubernetes.io/name": service } };
	if (tier === "site") {
		// On the nodes an operator labels as sitting on a target LAN (kubectl label node <n>
		// clusterplatform.io/distributor=true): host network, because DHCP broadcasts do not cross
		// the pod network, and NET_ADMIN for dnsmasq. Remote sites run the same image with docker run.
		return [
			{
				apiVersion: "apps/v1",
				kind: "DaemonSet",
				metadata: meta,
				spec: {
					selector,
					template: {
						metadata: { labels: labels(service, tier) },
						spec: {
							hostNetwork: true,
							dnsPolicy: "ClusterFirstWithHostNet",
							nodeSelector: { "clusterplatform.io/distributor": "true" },
							containers: [container(service, tier)],
						},
					},
				},
			},
		];
	}
	const deployment = {
		apiVersion: "apps/v1",
		kind: "Deployment",
		metadata: meta,
		spec: {
			replicas: 1,
			selector,
			template: {
				metadata: { labels: labels(service, tier) },
				spec: {
					...hostNetworkSpec(service),
					securityContext: { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 },
					// Workers finish (or hand back) their job before they go: BullMQ retries the rest.
					terminationGracePeriodSeconds: tier === "worker" ? 120 : 30,
					containers: [container(service, tier)],
				},
			},
		},
	};
	if (tier !== "gateway") return [deployment];
	const nodePort = {
		apiVersion: "v1",
		kind: "Service",
		metadata: { name: service, labels: labels(service, tier) },
		spec: { type: "NodePort", selector: selector.matchLabels, ports: [{ name: "http", port: GATEWAY_PORT, targetPort: "http", nodePort: GATEWAY_NODE_PORT }] },
	};
	return [deployment, nodePort];
}

export function serviceManifests(): object[] {
	return Object.keys(CATALOGUE).flatMap(workload);
}

export function renderServicesYaml(): string {
	const header = "# GENERATED by `npm run k8s` from packages/cli/src/catalogue.ts (k8s/generate.ts); do not edit.\n";
	return header + serviceManifests().map((doc) => `---\n${stringify(doc, { lineWidth: 0, aliasDuplicateObjects: false })}`).join("");
}
