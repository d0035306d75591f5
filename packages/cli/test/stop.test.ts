import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { processAlive } from "@clusterplatform/core";
import { eventually, freePort } from "@clusterplatform/test-kit/ports";
import { REPO_ROOT } from "@clusterplatform/test-kit/processes";
import { scratchDir } from "@clusterplatform/test-kit/scratch";

/** Every process in a group: /proc/<pid>/stat's fifth field is the process group. */
function groupMembers(group: number): number[] {
	return fs
		.readdirSync("/proc")
		.filter((name) => /^\d+$/.test(name))
		.filter((pid) => {
			try {
				return Number(fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[2]) === group;
			} catch {
				return false;
			}
		})
		.map(Number);
}


/**
 * Stopping `npm start` as an operator does: Ctrl-C in its terminal (SIGINT to the terminal's whole
 * process group), a supervisor's SIGTERM to the group, and a stop after the private redis-server was
 * already gone. Each ends everything it started within a few seconds, and a provisioner killed
 * outright leaves nothing that blocks the next start.
 */
describe("stopping the provisioner", () => {
	const started: ChildProcess[] = [];
	afterAll(() => {
		for (const child of started) if (child.pid && processAlive(child.pid)) process.kill(-child.pid, "SIGKILL");
	});

	/** `npm start` as a terminal runs it: the leader of a process group of its own. */
	const npmStart = async (dataDir: string) => {
		const port = await freePort();
		const child = spawn("npm", ["start", "--silent"], {
			cwd: REPO_ROOT,
			detached: true,
			stdio: ["ignore", "pipe", "pipe"],
			env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "warn" },
		});
		started.push(child);
		let output = "";
		child.stdout!.on("data", (c) => (output += c));
		child.stderr!.on("data", (c) => (output += c));
		const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
		await eventually(async () => (await fetch(`http://127.0.0.1:${port}/api/health`).catch(() => null))?.ok, 60_000, "npm start serving");
		const redisPid = Number(fs.readFileSync(path.join(dataDir, "redis", "redis.pid"), "utf8"));
		return { child, exited, redisPid, output: () => output };
	};
	const dataDir = () => scratchDir("cpp-stop-");
	/** Milliseconds until no process of the group (npm, sh, node) and no given process is left. */
	const allGone = async (group: number, others: number[], boundMs: number) => {
		const t0 = Date.now();
		await eventually(() => groupMembers(group).length === 0 && others.every((pid) => !processAlive(pid)), boundMs, "every process gone");
		return Date.now() - t0;
	};

	it("ends on Ctrl-C to the terminal's process group, redis-server last, nothing left", async () => {
		const run = await npmStart(dataDir());
		const group = run.child.pid!;
		expect(processAlive(run.redisPid)).toBe(true);
		// The private redis-server is not in the terminal's group: Ctrl-C does not reach it first.
		expect(groupMembers(group)).not.toContain(run.redisPid);
		process.kill(-group, "SIGINT");
		const ms = await allGone(group, [run.redisPid], 10_000);
		console.log(`Ctrl-C to the group: everything ended in ${ms} ms`);
	}, 90_000);

	it("ends on SIGTERM to the group even when its redis-server died first", async () => {
		const run = await npmStart(dataDir());
		process.kill(run.redisPid, "SIGKILL");
		await eventually(() => !processAlive(run.redisPid), 5000, "redis-server gone");
		// The queue workers retry the vanished socket; the stop must not wait on them for ever.
		await new Promise((r) => setTimeout(r, 1000));
		process.kill(-run.child.pid!, "SIGTERM");
		const ms = await allGone(run.child.pid!, [], 10_000);
		console.log(`SIGTERM after redis-server died: everything ended in ${ms} ms`);
	}, 90_000);

	it("starts again on the data dir of a provisioner that was killed outright, ending the redis-server it left", async () => {
		const dir = dataDir();
		const first = await npmStart(dir);
		process.kill(-first.child.pid!, "SIGKILL");
		await first.exited;
		// SIGKILL leaves no chance to stop redis-server: it is orphaned, still serving the data dir.
		expect(processAlive(first.redisPid)).toBe(true);
		const second = await npmStart(dir);
		expect(processAlive(first.redisPid)).toBe(false);
		expect(second.redisPid).not.toBe(first.redisPid);
		process.kill(-second.child.pid!, "SIGINT");
		await allGone(second.child.pid!, [second.redisPid], 10_000);
	}, 120_000);
});
