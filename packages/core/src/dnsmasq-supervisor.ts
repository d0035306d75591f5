import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { StringDecoder } from "node:string_decoder";

export type DnsmasqState = "off" | "on" | "crashed";

export interface DnsmasqStatus {
	on: boolean;
	state: DnsmasqState;
	pid: number | null;
	/** Why it is not running when it should be (exit code and its last log lines). */
	reason: string | null;
}

/** "state" when dnsmasq starts, stops or crashes; "line" for each line it logs (a distributor reads boots from them). */
export interface DnsmasqEvents {
	state: [DnsmasqStatus];
	line: [string];
}

export interface DnsmasqSupervisorOptions {
	/** Run dnsmasq through another program (e.g. `ip netns exec <ns>`, which execs it, so the PID is still dnsmasq's). */
	prefix?: string[];
	/** The log line that says its sockets are bound (default: the TFTP root line of a distributor's dnsmasq). */
	readyLine?: RegExp;
}

const LOG_LINES_KEPT = 1000;

/** Whole lines from a stream's chunks (a chunk may end mid-line; the tail waits for the next). */
function lineSplitter(onLine: (line: string) => void): (chunk: Buffer) => void {
	let partial = "";
	// A chunk may also end inside a multibyte character: the decoder keeps those bytes for the next.
	const decoder = new StringDecoder("utf8");
	return (chunk) => {
		const lines = (partial + decoder.write(chunk)).split("\n");
		partial = lines.pop()!.slice(-4096);
		for (const line of lines) if (line) onLine(line);
	};
}
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

/**
 * One dnsmasq child kept in the foreground. An exit nobody asked for is a crash: the state says
 * so with the exit reason and a "state" event fires; it is started again only when asked.
 */
export class DnsmasqSupervisor extends EventEmitter<DnsmasqEvents> {
	private child: ChildProcess | null = null;
	private stopping = false;
	private state: DnsmasqState = "off";
	private reason: string | null = null;
	private log: string[] = [];

	constructor(
		private readonly binary: string,
		private readonly options: DnsmasqSupervisorOptions = {},
	) {
		super();
	}

	status(): DnsmasqStatus {
		return { on: this.state === "on", state: this.state, pid: this.child?.pid ?? null, reason: this.reason };
	}

	/** dnsmasq's last log lines (DHCP answers, TFTP transfers): what an operator looks at first. */
	recentLog(): string[] {
		return [...this.log];
	}

	get running(): boolean {
		return this.child !== null;
	}

	/** Start on the given config file; resolves once dnsmasq says it started, or with the crash. */
	async start(confFile: string): Promise<DnsmasqStatus> {
		if (this.child) return this.status();
		this.reason = null;
		const [command, ...prefixArgs] = [...(this.options.prefix ?? []), this.binary];
		const child = spawn(command!, [...prefixArgs, "--keep-in-foreground", `--conf-file=${confFile}`, "--log-facility=-"], { stdio: ["ignore", "pipe", "pipe"] });
		this.child = child;
		const ready = new Promise<void>((resolve) => {
			const timer = setTimeout(resolve, READY_TIMEOUT_MS);
			const onLine = (line: string) => {
				this.emit("line", line);
				this.log.push(line);
				if (this.log.length > LOG_LINES_KEPT) this.log.shift();
				// dnsmasq logs the TFTP root (by default) after its sockets are bound.
				if ((this.options.readyLine ?? /TFTP root is/).test(line)) {
					clearTimeout(timer);
					resolve();
				}
			};
			child.stdout!.on("data", lineSplitter(onLine));
			child.stderr!.on("data", lineSplitter(onLine));
			child.once("exit", () => {
				clearTimeout(timer);
				resolve();
			});
		});
		child.once("error", (err) => {
			this.log.push(String(err));
		});
		child.once("exit", (code, signal) => {
			this.child = null;
			if (this.stopping) {
				this.state = "off";
			} else {
				this.state = "crashed";
				const tail = this.log.slice(-5).join("\n");
				this.reason = `dnsmasq exited ${signal ? `on ${signal}` : `with code ${code}`}${tail ? `: ${tail}` : ""}`;
			}
			this.emit("state", this.status());
		});
		this.state = "on";
		await ready;
		this.emit("state", this.status());
		return this.status();
	}

	async stop(): Promise<DnsmasqStatus> {
		const child = this.child;
		if (!child) {
			this.state = "off";
			this.reason = null;
			return this.status();
		}
		this.stopping = true;
		try {
			await new Promise<void>((resolve) => {
				const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
				child.once("exit", () => {
					clearTimeout(timer);
					resolve();
				});
				child.kill("SIGTERM");
			});
		} finally {
			this.stopping = false;
		}
		this.reason = null;
		return this.status();
	}

	/** SIGHUP does not reread dnsmasq's main config file: a new config needs a new process. */
	async restart(confFile: string): Promise<DnsmasqStatus> {
		await this.stop();
		return this.start(confFile);
	}
}
