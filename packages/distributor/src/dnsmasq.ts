import { spawn, type ChildProcess } from "node:child_process";
import { StringDecoder } from "node:string_decoder";
import { EventEmitter } from "node:events";
import type { ProxyNetwork } from "./validation";

/** Names the boot files get in the TFTP root; the PXE menu entries point at them. */
export const BIOS_BOOT_FILE = "undionly.kpxe";
export const UEFI_BOOT_FILE = "ipxe.efi";

export interface DnsmasqSettings {
	device: string;
	proxy: ProxyNetwork;
	tftpRoot: string;
	leaseFile: string;
	/** Where clients already running iPXE chain to (e.g. /api/mainscripts/1); none: they get no answer. */
	scriptUrl?: string | null;
}

/**
 * dnsmasq as a proxy DHCP server next to the LAN's router: it hands out no addresses (the router
 * does), only boot information. PXE firmware (not iPXE yet) gets iPXE over TFTP; iPXE itself
 * (user class "iPXE" or option 175) gets the script URL, so a prebuilt iPXE with no embedded
 * script still knows where to go.
 */
export function renderDnsmasqConfig(settings: DnsmasqSettings): string {
	const lines = [
		"# Written by the clusterplatform distributor worker on every configure; edits are lost.",
		"port=0",
		`interface=${settings.device}`,
		"bind-interfaces",
		// The TFTP root is in the worker's private data dir, which an unprivileged user cannot read;
		// tftp-secure still limits TFTP to files owned by that user.
		"user=root",
		"pid-file=",
		`dhcp-leasefile=${settings.leaseFile}`,
		"log-dhcp",
		`dhcp-range=${settings.proxy.network},proxy,${settings.proxy.netmask}`,
		"enable-tftp",
		`tftp-root=${settings.tftpRoot}`,
		"tftp-secure",
		"dhcp-userclass=set:ipxe,iPXE",
		"dhcp-match=set:ipxe,175",
		`pxe-service=tag:!ipxe,x86PC,clusterplatform,${BIOS_BOOT_FILE}`,
		`pxe-service=tag:!ipxe,BC_EFI,clusterplatform,${UEFI_BOOT_FILE}`,
		`pxe-service=tag:!ipxe,X86-64_EFI,clusterplatform,${UEFI_BOOT_FILE}`,
	];
	if (settings.scriptUrl) {
		lines.push(
			`pxe-service=tag:ipxe,x86PC,clusterplatform,${settings.scriptUrl}`,
			`pxe-service=tag:ipxe,BC_EFI,clusterplatform,${settings.scriptUrl}`,
			`pxe-service=tag:ipxe,X86-64_EFI,clusterplatform,${settings.scriptUrl}`,
			`dhcp-boot=tag:ipxe,${settings.scriptUrl}`,
		);
	}
	return `${lines.join("\n")}\n`;
}

export type DnsmasqState = "off" | "on" | "crashed";

export interface DnsmasqStatus {
	on: boolean;
	state: DnsmasqState;
	pid: number | null;
	/** Why it is not running when it should be (exit code and its last log lines). */
	reason: string | null;
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
export class DnsmasqSupervisor extends EventEmitter {
	private child: ChildProcess | null = null;
	private stopping = false;
	private state: DnsmasqState = "off";
	private reason: string | null = null;
	private log: string[] = [];

	/**
	 * `prefix` runs dnsmasq through another program (e.g. `ip netns exec <ns>`, which execs it, so
	 * the PID is still dnsmasq's); `readyLine` is the log line that says its sockets are bound.
	 */
	constructor(
		private readonly binary: string,
		private readonly options: { prefix?: string[]; readyLine?: RegExp } = {},
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
