import { spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Lan } from "./netns";

/** The LAN's own router: DHCP for everyone, and an IPv6 RA so iPXE does not wait for one. */
export function startRouter(lan: Lan, dir: string): ChildProcess {
	const conf = path.join(dir, "router.conf");
	const third = lan.prefix.split(".")[2];
	spawnSync("ip", ["-n", lan.ns.router, "addr", "add", `fd42:213:${third}::1/64`, "dev", lan.device, "nodad"]);
	fs.writeFileSync(
		conf,
		[
			"port=0",
			`interface=${lan.device}`,
			"bind-interfaces",
			"user=root",
			"pid-file=",
			`dhcp-leasefile=${path.join(dir, "router.leases")}`,
			`dhcp-range=${lan.prefix}.100,${lan.prefix}.199,255.255.255.0,10m`,
			`dhcp-option=option:router,${lan.routerIp}`,
			// Offer at once: the default ping check of a new address delays offers by seconds.
			"no-ping",
			"enable-ra",
			// Router lifetime 0: the prefix is advertised, nobody takes this LAN as a default route.
			`ra-param=${lan.device},10,0`,
			`dhcp-range=fd42:213:${third}::,ra-only,64`,
			"",
		].join("\n"),
	);
	return lan.spawnIn(lan.ns.router, "dnsmasq", ["--keep-in-foreground", `--conf-file=${conf}`, "--log-facility=-"], { stdio: "ignore" });
}
