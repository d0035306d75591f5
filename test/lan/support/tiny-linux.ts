import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/**
 * A node small enough to boot in seconds under QEMU's software CPU: Debian's cloud kernel plus
 * an initramfs of busybox-static and dropbear. Its init brings up the network with DHCP, starts
 * dropbear with the given authorized key, then fetches and runs the post-boot script named on
 * the kernel command line (cpp.post=<url>) — the same step an installed host takes to register.
 */
export interface TinyLinux {
	kernel: string;
	initrd: string;
	/** `uname -r` inside the guest. */
	release: string;
}

const MODULES = ["virtio_pci", "virtio_net"];

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /tmp /run && mount -t devpts devpts /dev/pts
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.script -t 30 -T 1 -A 1 -n -q || echo "CPP: no DHCP lease"
dropbear -R -E -p 22 -s
post=$(sed -n 's/.*cpp\\.post=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$post" ]; then
	wget -q -O /tmp/post.sh "$post" && sh /tmp/post.sh && echo "CPP: registered"
fi
echo "CPP: ready"
while true; do sleep 3600; done
`;

const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
	bound|renew)
		ip addr flush dev "$interface"
		ip addr add "$ip/\${mask:-24}" dev "$interface"
		[ -n "$router" ] && ip route add default via "\${router%% *}" dev "$interface"
		echo "CPP: address $ip"
		;;
esac
exit 0
`;

function run(command: string, args: string[], options: { cwd?: string; input?: Buffer } = {}): Buffer {
	const result = spawnSync(command, args, { cwd: options.cwd, input: options.input, maxBuffer: 512 * 1024 * 1024, timeout: 120_000 });
	if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${result.stderr?.toString() || result.error}`);
	return result.stdout;
}

export function cloudKernel(): { kernel: string; release: string } | null {
	const kernels = fs.existsSync("/boot") ? fs.readdirSync("/boot").filter((f) => /^vmlinuz-.*-cloud-amd64$/.test(f)).sort() : [];
	const latest = kernels.at(-1);
	if (!latest) return null;
	return { kernel: path.join("/boot", latest), release: latest.replace(/^vmlinuz-/, "") };
}

/** Files a dynamically linked program needs: itself, its libraries and the loader. */
function withLibraries(binary: string): string[] {
	const out = run("ldd", [binary]).toString();
	const libs = [...out.matchAll(/(\/[^\s]+\.so[^\s]*)/g)].map((m) => m[1]!);
	return [binary, ...new Set(libs)];
}

export function buildTinyLinux(dir: string, authorizedKey: string): TinyLinux {
	const found = cloudKernel();
	if (!found) throw new Error("no /boot/vmlinuz-*-cloud-amd64: apt-get install linux-image-cloud-amd64");
	// Modules in load order (dependencies first), as modprobe would insert them.
	const modules = MODULES.flatMap((name) => [...run("modprobe", ["-S", found.release, "--show-depends", name]).toString().matchAll(/^insmod (\S+)/gm)].map((m) => m[1]!));
	return assemble(dir, authorizedKey, { ...found, busybox: "/bin/busybox", files: withLibraries("/usr/sbin/dropbear").map((file) => [file, file] as [string, string]), modules });
}

/** Foreign node architectures: the parts scripts/setup unpacks for them (install_node_parts <arch>). */
export type NodeArch = "arm64";
const NODE_PARTS: Record<NodeArch, { kernel: RegExp; libDirs: string[]; console: string; machine: string }> = {
	arm64: { kernel: /^vmlinuz-.*-cloud-arm64$/, libDirs: ["lib", "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"], console: "ttyAMA0", machine: "aarch64" },
};

/**
 * Where scripts/setup unpacks a foreign node's parts (Debian's kernel, busybox-static, dropbear and
 * its libraries; apt-get download + dpkg -x, nothing installed): /opt/clusterplatform/<arch>-node.
 */
export function nodePartsRoot(arch: NodeArch): string {
	return `/opt/clusterplatform/${arch}-node/root`;
}

/** The kernel of a foreign node's unpacked parts, or null when setup did not unpack them. */
export function nodeParts(arch: NodeArch, root = nodePartsRoot(arch)): { kernel: string; release: string; console: string; machine: string } | null {
	if (!fs.existsSync(path.join(root, "..", ".complete"))) return null;
	const kernels = fs.existsSync(path.join(root, "boot")) ? fs.readdirSync(path.join(root, "boot")).filter((f) => NODE_PARTS[arch].kernel.test(f)).sort() : [];
	const latest = kernels.at(-1);
	return latest ? { kernel: path.join(root, "boot", latest), release: latest.replace(/^vmlinuz-/, ""), console: NODE_PARTS[arch].console, machine: NODE_PARTS[arch].machine } : null;
}

/** A foreign program's libraries (readelf reads any architecture), found under the unpacked root. */
function foreignLibraries(root: string, libDirs: string[], binary: string, seen = new Set<string>()): string[] {
	const needed = [...run("readelf", ["-d", path.join(root, binary)]).toString().matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
	const files: string[] = [];
	for (const name of needed) {
		if (seen.has(name)) continue;
		seen.add(name);
		const found = libDirs.map((d) => path.join(d, name)).find((f) => fs.existsSync(path.join(root, f)));
		if (!found) throw new Error(`${binary} needs ${name}, which is not in ${root}`);
		files.push(`/${found}`, ...foreignLibraries(root, libDirs, found, seen));
	}
	return files;
}

/** The same node for another architecture (AAVMF guests), from the parts scripts/setup unpacked. */
export function buildForeignTinyLinux(arch: NodeArch, dir: string, authorizedKey: string, root = nodePartsRoot(arch)): TinyLinux & { console: string; machine: string } {
	const found = nodeParts(arch, root);
	if (!found) throw new Error(`no ${arch} node parts in ${root}: scripts/setup unpacks them (install_node_parts ${arch})`);
	const modules = MODULES.flatMap((name) => [...run("modprobe", ["-d", root, "-S", found.release, "--show-depends", name]).toString().matchAll(/^insmod (\S+)/gm)].map((m) => m[1]!));
	const files = ["/usr/sbin/dropbear", ...foreignLibraries(root, NODE_PARTS[arch].libDirs, "usr/sbin/dropbear")].map((file) => [path.join(root, file), file] as [string, string]);
	return { ...assemble(dir, authorizedKey, { ...found, busybox: path.join(root, "bin/busybox"), files, modules }), console: found.console, machine: found.machine };
}

function assemble(dir: string, authorizedKey: string, parts: { kernel: string; release: string; busybox: string; files: [string, string][]; modules: string[] }): TinyLinux {
	const root = path.join(dir, "root");
	for (const sub of ["bin", "sbin", "etc/dropbear", "root/.ssh", "lib/modules", "proc", "sys", "dev", "tmp", "usr/bin", "usr/sbin"]) fs.mkdirSync(path.join(root, sub), { recursive: true });
	fs.copyFileSync(parts.busybox, path.join(root, "bin/busybox"));
	fs.chmodSync(path.join(root, "bin/busybox"), 0o755);
	for (const [source, file] of parts.files) {
		const target = path.join(root, file);
		fs.mkdirSync(path.dirname(target), { recursive: true });
		fs.copyFileSync(fs.realpathSync(source), target);
		fs.chmodSync(target, 0o755);
	}
	fs.mkdirSync(path.join(root, "lib64"), { recursive: true });
	const order: string[] = [];
	for (const file of parts.modules) {
		const base = path.basename(file);
		if (order.includes(base)) continue;
		if (!base.endsWith(".ko")) throw new Error(`module ${file} is compressed; busybox insmod needs plain .ko files`);
		fs.copyFileSync(file, path.join(root, "lib/modules", base));
		order.push(base);
	}
	fs.writeFileSync(path.join(root, "lib/modules/order"), `${order.join("\n")}\n`);
	fs.writeFileSync(path.join(root, "init"), INIT, { mode: 0o755 });
	fs.writeFileSync(path.join(root, "etc/udhcpc.script"), UDHCPC_SCRIPT, { mode: 0o755 });
	fs.writeFileSync(path.join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
	fs.writeFileSync(path.join(root, "etc/group"), "root:x:0:\n");
	fs.writeFileSync(path.join(root, "etc/shells"), "/bin/sh\n");
	fs.chmodSync(path.join(root, "root"), 0o700);
	fs.chmodSync(path.join(root, "root/.ssh"), 0o700);
	fs.writeFileSync(path.join(root, "root/.ssh/authorized_keys"), authorizedKey.endsWith("\n") ? authorizedKey : `${authorizedKey}\n`, { mode: 0o600 });
	// cpio in newc format, file list from find (relative paths), then gzip.
	const list = run("find", [".", "-mindepth", "1"], { cwd: root });
	const archive = run("cpio", ["-o", "-H", "newc", "--quiet", "-R", "0:0"], { cwd: root, input: list });
	const initrd = path.join(dir, "initrd.cpio.gz");
	fs.writeFileSync(initrd, run("gzip", ["-1", "-n"], { input: archive }));
	return { kernel: parts.kernel, initrd, release: parts.release };
}
