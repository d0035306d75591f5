import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { stopChild } from "./servers";
import { freePort, waitForPort } from "./ports";

const run = promisify(execFile);

/**
 * A real S3 server for tests: Ceph's radosgw on a throwaway single-node cluster (one monitor, one
 * memstore OSD, no manager, pools of size 1), beast frontend on 127.0.0.1. cephx stays on (radosgw
 * fails without it), so S3 signatures are really checked. Debian packages: radosgw ceph-mon ceph-osd.
 * Ready in ~10–20 s; stop() ends exactly the three daemons it started (by PID) and removes the dir.
 */
export interface TestRadosgw {
	endPoint: string;
	port: number;
	accessKey: string;
	secretKey: string;
	/** S3_* variables for loadConfig. */
	env(bucket: string): Record<string, string>;
	stop(): Promise<void>;
}

export const RADOSGW_BINARIES = ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool", "monmaptool"];

/** The binaries that are missing (empty when radosgw can run here). */
export function missingRadosgwBinaries(): string[] {
	const dirs = (process.env.PATH ?? "/usr/bin:/bin").split(":").concat(["/usr/bin", "/usr/sbin"]);
	return RADOSGW_BINARIES.filter((bin) => !dirs.some((dir) => fs.existsSync(path.join(dir, bin))));
}

/** `describe` when radosgw can run here; else `describe.skip`, saying what was skipped and why. */
export function describeWithRadosgw(what: string): jest.Describe {
	const missing = missingRadosgwBinaries();
	if (!missing.length) return describe;
	console.warn(`SKIPPED ${what}: ${missing.join(", ")} not installed (apt-get install radosgw ceph-mon ceph-osd)`);
	return describe.skip;
}

function cephConf(dir: string, fsid: string, monPort: number): string {
	return `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${monPort}]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 1073741824
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
keyring = ${dir}/$name.keyring
mon data = ${dir}/mon/$cluster-$id
osd data = ${dir}/osd/$cluster-$id
rgw data = ${dir}/rgw
`;
}


/** Resolves when `url` answers HTTP 200; bounded. */
async function waitForHttp(url: string, timeoutMs: number, daemons: ChildProcess[]): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const died = daemons.find((d) => d.exitCode !== null || d.signalCode !== null);
		if (died) throw new Error(`${died.spawnfile} exited (${died.exitCode ?? died.signalCode}) before radosgw was ready`);
		const ok = await fetch(url, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false);
		if (ok) return;
		if (Date.now() > deadline) throw new Error(`radosgw did not answer at ${url} within ${timeoutMs} ms`);
		await new Promise((r) => setTimeout(r, 250));
	}
}

export async function startRadosgw(options: { timeoutMs?: number } = {}): Promise<TestRadosgw> {
	const missing = missingRadosgwBinaries();
	if (missing.length) throw new Error(`radosgw needs ${missing.join(", ")}: apt-get install radosgw ceph-mon ceph-osd`);
	const timeoutMs = options.timeoutMs ?? 90_000;
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-rgw-"));
	for (const sub of ["run", "log", "mon", "osd/ceph-0", "rgw"]) fs.mkdirSync(path.join(dir, sub), { recursive: true });
	const daemons: ChildProcess[] = [];
	const stop = async () => {
		for (const daemon of [...daemons].reverse()) await stopChild(daemon, "SIGTERM", 10_000);
		fs.rmSync(dir, { recursive: true, force: true });
	};
	try {
		const [monPort, rgwPort] = [await freePort(), await freePort()];
		const fsid = randomUUID();
		const conf = path.join(dir, "ceph.conf");
		fs.writeFileSync(conf, cephConf(dir, fsid, monPort));
		const c = ["-c", conf];
		const exec = (bin: string, args: string[], input?: string) => {
			const promise = run(bin, args, { timeout: 60_000, cwd: dir });
			if (input !== undefined) promise.child.stdin?.end(input);
			return promise;
		};
		const daemon = (bin: string, args: string[]) => {
			const child = spawn(bin, [...c, "-f", ...args], { stdio: ["ignore", fs.openSync(path.join(dir, "log", `${bin}.out`), "a"), fs.openSync(path.join(dir, "log", `${bin}.err`), "a")] });
			daemons.push(child);
			return child;
		};

		// Monitor: keyrings (mon. and client.admin), a one-monitor map, mkfs, start.
		const monKeyring = path.join(dir, "mon.a.keyring");
		const adminKeyring = path.join(dir, "client.admin.keyring");
		await exec("ceph-authtool", ["--create-keyring", monKeyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"]);
		await exec("ceph-authtool", ["--create-keyring", adminKeyring, "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"]);
		await exec("ceph-authtool", [monKeyring, "--import-keyring", adminKeyring]);
		await exec("monmaptool", ["--create", "--addv", "a", `[v2:127.0.0.1:${monPort}]`, "--fsid", fsid, path.join(dir, "monmap")]);
		await exec("ceph-mon", [...c, "--mkfs", "-i", "a", "--monmap", path.join(dir, "monmap"), "--keyring", monKeyring]);
		daemon("ceph-mon", ["-i", "a"]);
		await waitForPort(monPort, 20_000);

		// One memstore OSD, registered with its own cephx key.
		const osdUuid = randomUUID();
		const osdKey = (await exec("ceph-authtool", ["--gen-print-key"])).stdout.trim();
		const osdId = (await exec("ceph", [...c, "--connect-timeout", "20", "osd", "new", osdUuid, "-i", "-"], JSON.stringify({ cephx_secret: osdKey }))).stdout.trim();
		await exec("ceph-authtool", ["--create-keyring", path.join(dir, `osd.${osdId}.keyring`), "--name", `osd.${osdId}`, "--add-key", osdKey]);
		fs.mkdirSync(path.join(dir, "osd", `ceph-${osdId}`), { recursive: true });
		await exec("ceph-osd", [...c, "-i", osdId, "--mkfs", "--osd-uuid", osdUuid]);
		daemon("ceph-osd", ["-i", osdId]);

		// The gateway and an S3 user.
		await exec("ceph", [...c, "auth", "get-or-create", "client.rgw.gw", "mon", "allow rw", "osd", "allow rwx", "-o", path.join(dir, "client.rgw.gw.keyring")]);
		daemon("radosgw", ["-n", "client.rgw.gw", "--rgw-frontends", `beast endpoint=127.0.0.1:${rgwPort}`]);
		await waitForHttp(`http://127.0.0.1:${rgwPort}/`, timeoutMs, daemons);
		const accessKey = `CPP${randomUUID().replace(/-/g, "").slice(0, 17).toUpperCase()}`;
		const secretKey = randomUUID().replace(/-/g, "") + randomUUID().replace(/-/g, "").slice(0, 8);
		await exec("radosgw-admin", [...c, "user", "create", "--uid", "cpp-test", "--display-name", "cpp test", "--access-key", accessKey, "--secret-key", secretKey]);

		return {
			endPoint: "127.0.0.1",
			port: rgwPort,
			accessKey,
			secretKey,
			env: (bucket) => ({ S3_ENDPOINT: "127.0.0.1", S3_PORT: String(rgwPort), S3_USE_SSL: "false", S3_ACCESS_KEY: accessKey, S3_SECRET_KEY: secretKey, S3_BUCKET: bucket }),
			stop,
		};
	} catch (err) {
		const logs = fs.existsSync(path.join(dir, "log")) ? fs.readdirSync(path.join(dir, "log")).map((f) => `${f}: ${fs.readFileSync(path.join(dir, "log", f), "utf8").slice(-600)}`).join("\n") : "";
		await stop();
		throw new Error(`${(err as Error).message}\n${logs}`);
	}
}
