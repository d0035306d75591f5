import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { generateToken, tokenEntry } from "@clusterplatform/core";
import { eventually, freePort } from "../support/ports";
import { startServiceProcess, type ServiceProcess } from "../support/processes";
import { freshPostgresDatabase } from "../support/provisioner";
import { describeWithRadosgw, startRadosgw, type TestRadosgw } from "../support/radosgw";
import { startRedis, startSecureNats, type SecureNats, type TestServer } from "../support/servers";

/**
 * The Kubernetes topology on one machine: the gateway, the registries, the builder managers and
 * the builder workers each in their own OS process with their own data dir, joined only by NATS,
 * Redis, PostgreSQL and an S3 server (Ceph radosgw). Every process gets exactly the variables the
 * manifests' ConfigMap and Secret hold (k8s/base/config.yaml), pointed at the local servers.
 */
jest.setTimeout(300_000);

const ROOT = path.resolve(__dirname, "..", "..");
const describeOnRadosgw = describeWithRadosgw("the Kubernetes-like topology");

/** Keys of the shared ConfigMap and Secret every pod imports (envFrom). */
function manifestEnvKeys(): string[] {
	const docs = parseAllDocuments(fs.readFileSync(path.join(ROOT, "k8s", "base", "config.yaml"), "utf8")).map((d) => d.toJS());
	const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === "clusterplatform-env");
	const secret = docs.find((d) => d.kind === "Secret" && d.metadata.name === "clusterplatform-secrets");
	return [...Object.keys(cm.data), ...Object.keys(secret.stringData)].sort();
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describeOnRadosgw("Kubernetes-like topology: one process per tier, S3 on radosgw", () => {
	let nats: SecureNats;
	let redis: TestServer;
	let rgw: TestRadosgw;
	const processes: Record<string, ServiceProcess> = {};
	const dataDirs: string[] = [];
	let baseUrl: string;
	let s3PublicUrl: string;
	const token = generateToken();
	const bucket = "cpp-topology";

	const api = (pathname: string, init: RequestInit & { json?: unknown } = {}) => {
		const { json, ...rest } = init;
		const headers = new Headers(rest.headers);
		headers.set("Authorization", `Bearer ${token}`);
		if (json !== undefined) headers.set("Content-Type", "application/json");
		return fetch(`${baseUrl}/api${pathname}`, { ...rest, headers, body: json !== undefined ? JSON.stringify(json) : rest.body });
	};

	beforeAll(async () => {
		// As the manifests run them: NATS with TLS and the cluster's credential, Redis with a password.
		[nats, redis, rgw] = await Promise.all([startSecureNats([]), startRedis({ password: generateToken() }), startRadosgw()]);
		const port = await freePort();
		baseUrl = `http://127.0.0.1:${port}`;
		s3PublicUrl = `http://127.0.0.1:${rgw.port}`;
		// What the ConfigMap and Secret say, for this machine. A key added to the manifests must be added here.
		const shared: Record<string, string> = {
			...nats.env(null),
			REDIS_URL: redis.url,
			...rgw.env(bucket),
			S3_REGION: "us-east-1",
			S3_PUBLIC_URL: s3PublicUrl,
			PUBLIC_URL: baseUrl,
			LOG_LEVEL: "warn",
			DATABASE_URL: await freshPostgresDatabase(),
			API_TOKENS: tokenEntry("operator", token, false),
			SECRETS_KEY: generateToken(),
			TUNNEL_PUBLIC_HOST: "127.0.0.1",
		};
		expect(Object.keys(shared).sort()).toEqual(manifestEnvKeys());
		const pod = (name: string, services: string[], extra: Record<string, string> = {}) => {
			const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `cpp-pod-${name}-`));
			dataDirs.push(dataDir);
			processes[name] = startServiceProcess(["start", ...services], { ...shared, DATA_DIR: dataDir, NODE_ID: `${name}-${process.pid}`, ...extra });
		};
		pod("registries", ["mainscripts", "subscripts", "kickstarts", "prebootscripts", "postbootscripts", "sshkeys", "localnodes"]);
		pod("managers", ["ipxes", "grubs", "syslinuxs", "isos"]);
		// No IPXE_SOURCE_DIR: Debian's prebuilt iPXE (the image sets it; this machine's tree is optional).
		pod("workers", ["ipxes-worker", "grubs-worker", "syslinuxs-worker", "isos-worker"]);
		pod("gateway", ["gateway"], { PORT: String(port), HOST: "127.0.0.1" });
		await eventually(
			async () => (await Promise.all(["/mainscripts", "/isos", "/syslinuxs"].map((p) => api(p)))).every((r) => r.status === 200),
			60_000,
			"every tier reachable through the gateway",
		);
	}, 240_000);

	afterAll(async () => {
		await Promise.all(Object.values(processes).map((p) => p.stop()));
		await Promise.all([nats?.stop(), redis?.stop(), rgw?.stop()]);
		for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	async function build(entity: string, body: Record<string, unknown>) {
		const response = await api(`/${entity}`, { method: "POST", json: body });
		const created = await response.json();
		expect({ status: response.status, created }).toMatchObject({ status: 201 });
		return eventually(
			async () => {
				const row = await (await api(`/${entity}/${created.id}`, { headers: { Accept: "application/json" } })).json();
				return ["done", "failed"].includes(row.status) ? row : undefined;
			},
			120_000,
			`${entity} ${created.id} finished (workers: ${processes.workers!.output().slice(-400)})`,
		);
	}

	it("builds parts and a hybrid ISO; every artifact lives in the bucket and downloads from its public URL", async () => {
		const label = "CPP TOPOLOGY";
		const script = `#!ipxe\ndhcp\nchain ${baseUrl}/api/mainscripts/1`;
		const [ipxeUefi, ipxeBios, grubImg, ldLinux, isolinuxBin, isohdpfxBin] = await Promise.all([
			build("ipxes", { script, platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" }),
			build("ipxes", { script, platform: "bin", driver: "ipxe", extension: "lkrn" }),
			build("grubs", { label, platform: "x86_64-efi", architecture: "x64", extension: "efi", fragment: "img" }),
			build("syslinuxs", { fragment: "ldlinux.c32" }),
			build("syslinuxs", { fragment: "isolinux.bin" }),
			build("syslinuxs", { fragment: "isohdpfx.bin" }),
		]);
		for (const row of [ipxeUefi, ipxeBios, grubImg, ldLinux, isolinuxBin, isohdpfxBin]) {
			expect(row).toMatchObject({ status: "done", error: null, progress: 100 });
			expect(row.url.startsWith(`${s3PublicUrl}/${bucket}/`)).toBe(true);
		}
		// A booting host's download: anonymous, straight from the bucket, byte for byte Debian's file.
		const isolinux = await fetch(isolinuxBin.url);
		expect(isolinux.status).toBe(200);
		expect(sha256(Buffer.from(await isolinux.arrayBuffer()))).toBe(sha256(fs.readFileSync("/usr/lib/ISOLINUX/isolinux.bin")));

		const iso = await build("isos", {
			label,
			script,
			ipxeUefiId: ipxeUefi.id,
			ipxeBiosId: ipxeBios.id,
			grubImgId: grubImg.id,
			ldLinuxId: ldLinux.id,
			isolinuxBinId: isolinuxBin.id,
			isohdpfxBinId: isohdpfxBin.id,
		});
		expect(iso).toMatchObject({ status: "done", error: null });
		expect(iso.url).toBe(`${s3PublicUrl}/${bucket}/isos/${iso.id}/dist.iso`);
		const image = Buffer.from(await (await fetch(iso.url)).arrayBuffer());
		expect(image.length).toBeGreaterThan(1024 * 1024);
		expect(image.subarray(0x8001, 0x8006).toString("latin1")).toBe("CD001");
		expect(image.subarray(0x8028, 0x8028 + label.length).toString("latin1")).toBe(label);
		// Nothing went through a shared disk: no process has an artifacts directory.
		for (const dir of dataDirs) expect(fs.existsSync(path.join(dir, "artifacts"))).toBe(false);
	});

	it("the gateway's /api/metrics covers every process, with builds by status", async () => {
		const response = await api("/metrics");
		expect(response.status).toBe(200);
		const families = parsePrometheusTextFormat(await response.text());
		const nodes = new Set(families.find((f) => f.name === "moleculer_request_total")!.metrics.map((m) => m.labels?.nodeID));
		for (const name of ["gateway", "registries", "managers", "workers"]) expect(nodes).toContain(`${name}-${process.pid}`);
		const builds = families.find((f) => f.name === "clusterplatform_builds")!;
		const done = (builder: string) => Number(builds.metrics.find((m) => m.labels?.builder === builder && m.labels?.status === "done")?.value);
		expect(done("isos")).toBeGreaterThanOrEqual(1);
		expect(done("syslinuxs")).toBeGreaterThanOrEqual(3);
		const depth = families.find((f) => f.name === "clusterplatform_queue_jobs")!.metrics.filter((m) => m.labels?.state === "waiting");
		expect(depth.map((m) => m.labels?.queue).sort()).toEqual(["grubs", "ipxes", "isos", "syslinuxs"]);
		// Without a token the admin API is closed, the machine path open.
		expect((await fetch(`${baseUrl}/api/metrics`)).status).toBe(401);
		expect((await fetch(`${baseUrl}/api/health`)).status).toBe(200);
	});
});
