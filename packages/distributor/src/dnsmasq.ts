import { spawn, type ChildProcess } from "node:child_process";
import { StringDecoder } from "node:string_decoder";
import { EventEmitter } from "node:events";
import type { ProxyNetwork } from "./validation";

/** Names the boot files get in the TFTP root; the PXE menu entries point at them. */
export const BIOS_BOOT_FILE = "undionly.kpxe";
export const UEFI_BOOT_FILE = "ipxe.efi";
/** The optional binaries for 32-bit x86 UEFI (bin-i386-efi) and 64-bit ARM UEFI (bin-arm64-efi). */
export const UEFI_IA32_BOOT_FILE = "ipxe-ia32.efi";
export const UEFI_ARM64_BOOT_FILE = "ipxe-arm64.efi";

/**
 * Which boot file answers which client architecture (DHCP option 93, RFC 4578 and IANA's
 * "Processor Architecture Types"), and dnsmasq's name for it in pxe-service. dnsmasq numbers
 * X86-64_EFI 7 and BC_EFI 9, the reverse of the registry's names; both are x64 UEFI in practice.
 */
export interface BootArchitecture {
	/** Settings field of the binary (the seed's two, and the optional ia32 and arm64 ones). */
	field: "ipxePxeBiosUrl" | "ipxePxeUefiUrl" | "ipxePxeUefiIa32Url" | "ipxePxeUefiArm64Url";
	file: string;
	/** PXE client architectures (option 93) and dnsmasq's CSA names for them. */
	pxe: { arch: number; csa: string }[];
	/** UEFI HTTP boot client architectures (option 93 with vendor class HTTPClient); none for BIOS. */
	http: number[];
	label: string;
}

export const BOOT_ARCHITECTURES: readonly BootArchitecture[] = [
	{ field: "ipxePxeBiosUrl", file: BIOS_BOOT_FILE, pxe: [{ arch: 0, csa: "x86PC" }], http: [], label: "x86 BIOS" },
	{ field: "ipxePxeUefiUrl", file: UEFI_BOOT_FILE, pxe: [{ arch: 7, csa: "X86-64_EFI" }, { arch: 9, csa: "BC_EFI" }], http: [16], label: "x64 UEFI" },
	{ field: "ipxePxeUefiIa32Url", file: UEFI_IA32_BOOT_FILE, pxe: [{ arch: 6, csa: "IA32_EFI" }], http: [15], label: "ia32 UEFI" },
	{ field: "ipxePxeUefiArm64Url", file: UEFI_ARM64_BOOT_FILE, pxe: [{ arch: 11, csa: "ARM64_EFI" }], http: [19], label: "arm64 UEFI" },
];

export interface DnsmasqSettings {
	device: string;
	proxy: ProxyNetwork;
	tftpRoot: string;
	leaseFile: string;
	/** Where clients already running iPXE chain to (e.g. /api/mainscripts/1); none: they get no answer. */
	scriptUrl?: string | null;
	/** Boot files present in the TFTP root (default: the seed's two); an architecture without its file gets no answer. */
	bootFiles?: readonly string[];
}

/**
 * dnsmasq as a proxy DHCP server next to the LAN's router: it hands out no addresses (the router
 * does), only boot information. PXE firmware (not iPXE yet) gets the iPXE binary of its
 * architecture over TFTP; iPXE itself (user class "iPXE" or option 175) gets the script URL, so a
 * prebuilt iPXE with no embedded script still knows where to go. (dnsmasq's proxy mode answers
 * only vendor class PXEClient: UEFI HTTP boot clients are answered by http-boot.ts.)
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
	];
	const present = settings.bootFiles ?? [BIOS_BOOT_FILE, UEFI_BOOT_FILE];
	const served = BOOT_ARCHITECTURES.filter((a) => present.includes(a.file));
	// PXE firmware gets the iPXE binary of its architecture (option 93) over TFTP.
	for (const architecture of served) for (const { csa } of architecture.pxe) lines.push(`pxe-service=tag:!ipxe,${csa},clusterplatform,${architecture.file}`);
	if (settings.scriptUrl) {
		for (const architecture of served) for (const { csa } of architecture.pxe) lines.push(`pxe-service=tag:ipxe,${csa},clusterplatform,${settings.scriptUrl}`);
		lines.push(`dhcp-boot=tag:ipxe,${settings.scriptUrl}`);
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
