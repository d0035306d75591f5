import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { run } from "@clusterplatform/core";
import { freePort, waitForPort } from "@clusterplatform/test-kit/ports";
import { stopChild } from "@clusterplatform/test-kit/servers";

/**
 * A small, real yum repository: noarch RPMs built by rpmbuild (Debian's rpm) and indexed by
 * createrepo_c, in `dir` (Packages/ and repodata/).
 */
export class GeneratedRepository {
	constructor(readonly dir: string) {}

	get packagesDir(): string {
		return path.join(this.dir, "Packages");
	}

	/** Build `<name>-<version>-1.noarch.rpm` holding one file of `payload` bytes (random: incompressible). */
	async addPackage(name: string, version: string, payloadBytes = 2048): Promise<string> {
		const top = path.join(this.dir, "..", `rpmbuild-${name}-${version}`);
		const payload = path.join(top, "payload.bin");
		await fsp.mkdir(top, { recursive: true });
		await fsp.writeFile(payload, Buffer.from(Array.from({ length: payloadBytes }, () => Math.floor(Math.random() * 256))));
		const spec = path.join(top, `${name}.spec`);
		await fsp.writeFile(spec, [
			`Name: ${name}`, `Version: ${version}`, "Release: 1", `Summary: ${name} for the mirror tests`, "License: MIT", "BuildArch: noarch",
			"%description", `${name} for the mirror tests`,
			"%install", `mkdir -p %{buildroot}/usr/share/${name}`, `cp ${payload} %{buildroot}/usr/share/${name}/payload.bin`,
			"%files", `/usr/share/${name}/payload.bin`, "",
		].join("\n"));
		await run("rpmbuild", [
			"-bb", "--quiet",
			"--define", `_topdir ${top}`,
			"--define", `_rpmdir ${this.packagesDir}`,
			"--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
			spec,
		], { timeout: 60_000 });
		await fsp.rm(top, { recursive: true, force: true });
		return `Packages/${name}-${version}-1.noarch.rpm`;
	}

	/**
	 * Make it an installation tree like Fedora's …/os/: boot images and a .treeinfo whose
	 * [checksums] section lists them (what Anaconda's `url --url=` reads).
	 */
	async addInstallTree(): Promise<string[]> {
		const images = ["images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "images/install.img"];
		const lines = ["[header]", "type = productmd.treeinfo", "version = 1.2", "", "[general]", "name = Test 1", "", "[images-x86_64]", "kernel = images/pxeboot/vmlinuz", "initrd = images/pxeboot/initrd.img", "", "[stage2]", "mainimage = images/install.img", "", "[checksums]"];
		for (const image of images) {
			const data = Buffer.from(Array.from({ length: 4096 }, () => Math.floor(Math.random() * 256)));
			await fsp.mkdir(path.dirname(path.join(this.dir, image)), { recursive: true });
			await fsp.writeFile(path.join(this.dir, image), data);
			lines.push(`${image} = sha256:${createHash("sha256").update(data).digest("hex")}`);
		}
		await fsp.writeFile(path.join(this.dir, ".treeinfo"), `${lines.join("\n")}\n`);
		return images;
	}

	async removePackage(relative: string): Promise<void> {
		await fsp.rm(path.join(this.dir, relative));
	}

	/** (Re)index with createrepo_c; repodata file names carry their checksums, so changed metadata gets new names. */
	async index(extra: string[] = []): Promise<void> {
		await run("createrepo_c", ["--quiet", ...extra, this.dir], { timeout: 60_000 });
	}

	/** Every file under the repository, relative, with its SHA-256 and size. */
	async files(): Promise<Map<string, { sha256: string; size: number }>> {
		const out = new Map<string, { sha256: string; size: number }>();
		for (const entry of await fsp.readdir(this.dir, { recursive: true, withFileTypes: true })) {
			if (!entry.isFile()) continue;
			const full = path.join(entry.parentPath, entry.name);
			const data = await fsp.readFile(full);
			out.set(path.relative(this.dir, full), { sha256: createHash("sha256").update(data).digest("hex"), size: data.length });
		}
		return out;
	}
}

/** The repository over HTTP on 127.0.0.1 under /repo/, counting what it serves; paths can be corrupted or slowed. */
export class RepositoryServer {
	readonly requests: string[] = [];
	readonly corrupt = new Set<string>();
	/** Paths answered with a body that never ends and no Content-Length (a hostile or broken source). */
	readonly endless = new Set<string>();
	/** Milliseconds each package (Packages/…) response waits before its body. */
	packageDelayMs = 0;
	bytesServed = 0;
	private constructor(
		private readonly server: http.Server,
		readonly baseUrl: string,
	) {}

	static async start(root: string): Promise<RepositoryServer> {
		let self: RepositoryServer;
		const server = http.createServer(async (req, res) => {
			const relative = decodeURIComponent((req.url ?? "").split("?")[0]!).replace(/^\/repo\//, "");
			self.requests.push(relative);
			const file = path.join(root, relative);
			if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
				res.writeHead(404).end();
				return;
			}
			if (self.endless.has(relative)) {
				self.streamForever(res);
				return;
			}
			if (relative.startsWith("Packages/") && self.packageDelayMs) await new Promise((r) => setTimeout(r, self.packageDelayMs));
			const body = await fsp.readFile(file);
			if (self.corrupt.has(relative)) body[body.length - 1] ^= 0xff;
			self.bytesServed += body.length;
			res.writeHead(200, { "Content-Length": String(body.length) }).end(body);
		});
		await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
		self = new RepositoryServer(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}/repo/`);
		return self;
	}

	/** Write 64 KiB chunks as fast as the client takes them, until it hangs up. */
	private streamForever(res: http.ServerResponse): void {
		res.writeHead(200);
		const chunk = Buffer.alloc(64 * 1024, 0x5a);
		const pump = () => {
			let more = true;
			while (more && !res.destroyed) {
				more = res.write(chunk);
				this.bytesServed += chunk.length;
			}
		};
		res.on("drain", pump);
		pump();
	}

	packageRequests(): string[] {
		return this.requests.filter((r) => r.startsWith("Packages/"));
	}

	reset(): void {
		this.requests.length = 0;
		this.bytesServed = 0;
	}

	stop(): Promise<void> {
		this.server.closeAllConnections();
		return new Promise((resolve) => this.server.close(() => resolve()));
	}
}

/** Debian's rsync as a daemon on 127.0.0.1, serving the repository as module "repo". */
export class RsyncDaemon {
	private constructor(
		private readonly child: ChildProcess,
		readonly url: string,
		readonly logFile: string,
	) {}

	static async start(root: string, workDir: string): Promise<RsyncDaemon> {
		const port = await freePort();
		const config = path.join(workDir, "rsyncd.conf");
		const logFile = path.join(workDir, "rsyncd.log");
		await fsp.writeFile(config, [
			"use chroot = no", "uid = root", "gid = root", `log file = ${logFile}`, "transfer logging = yes",
			"[repo]", `  path = ${root}`, "  read only = yes", "",
		].join("\n"));
		const child = spawn("rsync", ["--daemon", "--no-detach", `--config=${config}`, `--port=${port}`, "--address=127.0.0.1"], { stdio: "ignore" });
		await waitForPort(port);
		return new RsyncDaemon(child, `rsync://127.0.0.1:${port}/repo/`, logFile);
	}

	stop(): Promise<void> {
		return stopChild(this.child);
	}
}
