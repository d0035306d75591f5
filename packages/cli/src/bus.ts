import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { ARTIFACT_ID_PARAM, ConfigError, busUser, natsUserEntry, type BusUser } from "@clusterplatform/core";

/** One entry a line, between the file's `users = [` and `]` (the form busUsersFile writes). */
const ENTRY_LINE = /^\s*(\{.*\})\s*$/;

function readEntries(file: string): Map<string, string> {
	const entries = new Map<string, string>();
	if (!fs.existsSync(file)) return entries;
	for (const line of fs.readFileSync(file, "utf8").split("\n")) {
		const entry = ENTRY_LINE.exec(line)?.[1];
		if (entry) entries.set((JSON.parse(entry) as { user: string }).user, entry);
	}
	return entries;
}

/**
 * Add (or replace) a user in a nats-server users file: `users = [ … ]`, one JSON entry a line, for
 * `authorization { include users.conf }`. Written whole to a temp file and renamed, mode 0600.
 */
export function writeBusUser(file: string, user: BusUser): void {
	const entries = readEntries(file);
	entries.set(user.user, natsUserEntry(user));
	const temp = `${file}.${process.pid}.tmp`;
	fs.writeFileSync(temp, `users = [\n${[...entries.values()].map((e) => `  ${e}`).join("\n")}\n]\n`, { mode: 0o600 });
	fs.renameSync(temp, file);
}

/**
 * `clusterplatform bus user [--site=<artifactId>] --file=<users.conf>`: a new bus credential — the
 * cluster's, or one site's (it reaches only that site's subjects, see core/bus.ts) — kept in the
 * users file as a bcrypt hash; the password is printed once, as the variables the process takes.
 */
export function busCommand(args: string[]): string {
	const [verb, ...rest] = args;
	const flag = (name: string) => rest.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
	const file = flag("file");
	const site = flag("site") ?? null;
	if (verb !== "user" || !file) throw new ConfigError("usage: clusterplatform bus user [--site=<artifactId>] --file=<nats users file>");
	if (site !== null && !ARTIFACT_ID_PARAM.pattern.test(site)) throw new ConfigError("bus user: --site must be a site tag (letters, digits, '.', '_', ':' or '-')");
	const password = randomBytes(24).toString("base64url");
	const user = busUser(site, password);
	writeBusUser(file, user);
	return [
		`# ${user.user} is in ${file} (its password only as a bcrypt hash); reload nats-server to take it (nats-server --signal reload).`,
		`# The ${site === null ? "cluster's processes" : `distributor of site ${site}`} connect with (shown once):`,
		`NATS_USER=${user.user}`,
		`NATS_PASSWORD=${password}`,
	].join("\n");
}
