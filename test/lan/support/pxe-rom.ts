import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { loadConfig } from "@clusterplatform/core";
import { INSTALLED_IPXE, ipxeWorkerSettings } from "@clusterplatform/ipxe";

/**
 * A NIC boot ROM that behaves like a vendor's PXE firmware, for the SeaBIOS PXE cell.
 *
 * SeaBIOS has no PXE client of its own, and every NIC option ROM Debian ships for QEMU
 * (/usr/lib/ipxe/qemu/pxe-*.rom, efi-*.rom from the ipxe-qemu package) is iPXE. An iPXE ROM
 * identifies itself in DHCP (user class "iPXE", option 175), so the distributor rightly hands it
 * the script URL and undionly.kpxe is never fetched. There is no non-iPXE PXE ROM in Debian
 * (no Intel Boot Agent, no etherboot/gPXE package, no CSM in Debian's OVMF).
 *
 * So the test builds one: iPXE's own PXE stack from the installed source tree, as a virtio-net
 * ROM (bin/1af41000.rom), with the parts of src/net/udp/dhcp.c that make it say "I am iPXE"
 * removed: the user class "iPXE" and option 175 (its feature list and bus ID). It then asks for a boot file like any PXE firmware (vendor class
 * PXEClient:Arch:00000, option 93 = 0, no user class, no option 175), follows the distributor's
 * proxy DHCP answer and PXE boot-server reply, fetches undionly.kpxe over TFTP, and runs it as a
 * PXE NBP on its PXE/UNDI stack — the same interface a vendor PXE ROM offers. Only then does
 * real iPXE (the API-built undionly.kpxe) start and fetch the script.
 *
 * Built in a scratch copy (never in the source or a prepared tree, never committed): from the
 * prepared "bin" object tree when there is one (seconds), else from the source (a minute or two).
 */
export interface PxeRom {
	rom: string;
	seconds: number;
	/** Where it was built from. */
	from: string;
}

const USER_CLASS_LINE = "\tDHCP_USER_CLASS_ID, DHCP_STRING ( 'i', 'P', 'X', 'E' ),\n";
const FEATURES_START = "\t/* Add options to identify the feature list */";
/** Up to here: the feature list and the bus ID, both inside option 175 (Etherboot encapsulated options). */
const FEATURES_END = "\t/* Add DHCP client identifier.";

/** Asynchronous (the provisioner's services share this process's event loop), argument arrays, bounded. */
async function run(command: string, args: string[], cwd: string, timeoutMs: number): Promise<void> {
	try {
		await promisify(execFile)(command, args, { cwd, encoding: "utf8", timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 64 * 1024 * 1024 });
	} catch (err) {
		const e = err as Error & { stderr?: string };
		throw new Error(`${command} ${args.join(" ")} failed: ${(e.stderr || e.message).slice(-2000)}`);
	}
}

/** The prepared "bin" object tree of the installed source (read only: it is copied, never built in). */
function preparedBinTree(sourceDir: string, treesDir: string | null): string | null {
	const root = treesDir ?? (path.resolve(sourceDir) === path.resolve(INSTALLED_IPXE.sourceDir) ? INSTALLED_IPXE.treesDir : null);
	if (!root || !fs.existsSync(root)) return null;
	for (const fingerprint of fs.readdirSync(root)) {
		const tree = path.join(root, fingerprint, "bin");
		try {
			const manifest = JSON.parse(fs.readFileSync(path.join(tree, ".clusterplatform-prepared.json"), "utf8"));
			if (path.resolve(manifest.sourceDir) === path.resolve(sourceDir, "src")) return tree;
		} catch {
			// not prepared (yet)
		}
	}
	return null;
}

/** Why the ROM cannot be built here, or null. */
export function pxeRomUnavailable(): string | null {
	const { sourceDir } = ipxeWorkerSettings(loadConfig());
	if (!sourceDir) return "no iPXE source tree (scripts/setup installs it in /opt/clusterplatform/ipxe, or set IPXE_SOURCE_DIR)";
	if (!fs.existsSync(path.join(sourceDir, "src", "net", "udp", "dhcp.c"))) return `${sourceDir} is not an iPXE source tree`;
	return null;
}

export async function buildPxeRom(dir: string): Promise<PxeRom> {
	const started = Date.now();
	const { sourceDir, treesDir } = ipxeWorkerSettings(loadConfig());
	if (!sourceDir) throw new Error(pxeRomUnavailable()!);
	const prepared = preparedBinTree(sourceDir, treesDir);
	const from = prepared ?? path.join(sourceDir, "src");
	const tree = path.join(dir, "pxe-rom-src");
	fs.rmSync(tree, { recursive: true, force: true });
	await run("cp", ["-a", from, tree], dir, 5 * 60_000);
	const dhcp = path.join(tree, "net", "udp", "dhcp.c");
	const source = fs.readFileSync(dhcp, "utf8");
	const start = source.indexOf(FEATURES_START);
	const end = source.indexOf(FEATURES_END);
	if (!source.includes(USER_CLASS_LINE) || start < 0 || end < start) throw new Error(`${dhcp}: the user class and option 175 lines were not found (another iPXE release?)`);
	// A new file, not a write through the copy: the prepared tree is never touched.
	fs.rmSync(dhcp);
	fs.writeFileSync(dhcp, (source.slice(0, start) + source.slice(end)).replace(USER_CLASS_LINE, ""));
	await run("make", ["-j2", "bin/1af41000.rom", "NO_WERROR=1"], tree, 10 * 60_000);
	const rom = path.join(dir, "pxe-firmware-virtio.rom");
	fs.copyFileSync(path.join(tree, "bin", "1af41000.rom"), rom);
	fs.rmSync(tree, { recursive: true, force: true });
	return { rom, seconds: (Date.now() - started) / 1000, from };
}
