import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { run } from "@clusterplatform/core";
import { startTestProvisioner, type TestProvisioner } from "@clusterplatform/test-kit/provisioner";
import { eventually } from "@clusterplatform/test-kit/ports";
import { describeWithRadosgw, startRadosgw, type TestRadosgw } from "@clusterplatform/test-kit/radosgw";
import { GeneratedRepository, RepositoryServer } from "./fixture";

/**
 * The distributed mode's store: a mirror lands in an S3 bucket (Ceph's radosgw), and clients
 * (dnf) install from the bucket's public URL. File names with "+" (libstdc++ and friends) too.
 */
const describeOnRadosgw = describeWithRadosgw("mirrors on radosgw");

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describeOnRadosgw("a mirror in an S3 bucket", () => {
	let rgw: TestRadosgw;
	let provisioner: TestProvisioner;
	let server: RepositoryServer;
	let repo: GeneratedRepository;
	let work: string;

	beforeAll(async () => {
		work = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-mirror-s3-"));
		repo = new GeneratedRepository(path.join(work, "repo"));
		await repo.addPackage("libplus++", "1.0");
		await repo.addPackage("mike", "1.0");
		await repo.index();
		await repo.addInstallTree();
		server = await RepositoryServer.start(repo.dir);
		rgw = await startRadosgw();
		provisioner = await startTestProvisioner({ services: ["gateway", "mirrors", "mirrors-worker"], env: { ...rgw.env("cpp-mirrors"), MIRROR_ALLOWED_HOSTS: "127.0.0.1" } });
	}, 180_000);
	afterAll(async () => {
		await provisioner?.stop();
		await server?.stop();
		await rgw?.stop();
		fs.rmSync(work, { recursive: true, force: true });
	});

	it("is served from the bucket's public URL, and dnf installs from it", async () => {
		const created = await (await provisioner.api("/mirrors", { method: "POST", json: { name: "s3", source: server.baseUrl } })).json();
		const row = await eventually(async () => {
			const now = await (await provisioner.api(`/mirrors/${created.id}`)).json();
			return now.status === "done" || now.status === "failed" ? now : undefined;
		}, 90_000, "the mirror finished");
		expect(row).toMatchObject({ status: "done", url: `http://127.0.0.1:${rgw.port}/cpp-mirrors/mirrors/${created.id}/repo/` });
		for (const [file, { sha256: expected }] of await repo.files()) {
			const response = await fetch(`${row.url}${file}`);
			expect({ file, status: response.status }).toEqual({ file, status: 200 });
			expect(sha256(Buffer.from(await response.arrayBuffer()))).toBe(expected);
		}
		const cache = path.join(work, "dnf-cache");
		const downloads = path.join(work, "downloads");
		const dnf = ["-q", `--setopt=cachedir=${cache}`, "--setopt=reposdir=/dev/null", "--setopt=gpgcheck=0", "--releasever=40", "--repofrompath", `s3,${row.url}`, "--repo=s3"];
		await run("dnf", [...dnf, "download", `--destdir=${downloads}`, "libplus++"], { timeout: 60_000 });
		const rpm = "libplus++-1.0-1.noarch.rpm";
		expect(sha256(await fsp.readFile(path.join(downloads, rpm)))).toBe((await repo.files()).get(`Packages/${rpm}`)!.sha256);

		expect((await provisioner.api(`/mirrors/${created.id}`, { method: "DELETE" })).status).toBe(200);
		expect((await fetch(`${row.url}repodata/repomd.xml`)).status).toBeGreaterThanOrEqual(400);
	}, 150_000);
});
