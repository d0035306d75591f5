/**
 * Which selector wins, stated once. A selector names any of: mac, uuid, artifactId (the site), arch,
 * firmware, labels. It matches a machine when everything it names is true of the machine (a MAC is
 * one of the machine's MACs; each label is the machine's label of that key). Of the selectors that
 * match, the most specific wins, compared in this order:
 *   1. identity: how many of mac and uuid it names,
 *   2. labels: how many labels it names,
 *   3. site: whether it names artifactId,
 *   4. hardware: how many of arch and firmware it names.
 * A selector naming a MAC thus beats any number of labels; three labels beat two labels and a site.
 * Two selectors that could match the same machine (nothing both name differs) with equal
 * specificity are refused when the second is written (409), so a boot never meets a tie.
 */
export const SPECIFICITY_RULE =
	"Most specific match wins, compared in order: identity (how many of mac, uuid), then the number of labels, then site (artifactId), then hardware (how many of arch, firmware). Two selectors that could match the same machine with equal specificity are refused at write time (409).";

export interface Criteria {
	mac?: string | null;
	uuid?: string | null;
	artifactId?: string | null;
	arch?: string | null;
	firmware?: string | null;
	labels?: Record<string, string> | null;
}

export interface MachineFacts {
	macs: string[];
	uuid?: string | null;
	artifactId?: string | null;
	arch?: string | null;
	firmware?: string | null;
	labels?: Record<string, string> | null;
}

const SCALARS = ["mac", "uuid", "artifactId", "arch", "firmware"] as const;

const present = (value: unknown): boolean => value !== null && value !== undefined && value !== "";

/** The four ranks in order, e.g. [1, 0, 1, 0] for a MAC and a site. */
export function ranks(criteria: Criteria): [number, number, number, number] {
	const count = (...names: (keyof Criteria)[]) => names.filter((n) => present(criteria[n])).length;
	return [count("mac", "uuid"), Object.keys(criteria.labels ?? {}).length, count("artifactId"), count("arch", "firmware")];
}

/** The ranks as one sortable number (labels are at most 32, so no rank spills into the next). */
export function specificity(criteria: Criteria): number {
	const [identity, labels, site, hardware] = ranks(criteria);
	return identity * 1_000_000 + labels * 10_000 + site * 100 + hardware;
}

/** Whether some machine could match both (nothing both name differs). Two MACs differ unless `sameMachine` says one machine has both. */
export function couldMatchSame(a: Criteria, b: Criteria, sameMachine = false): boolean {
	for (const name of SCALARS) {
		if (!present(a[name]) || !present(b[name]) || a[name] === b[name]) continue;
		if (name === "mac" && sameMachine) continue;
		return false;
	}
	const theirs = b.labels ?? {};
	return Object.entries(a.labels ?? {}).every(([key, value]) => !Object.hasOwn(theirs, key) || theirs[key] === value);
}

/** What a selector matched a machine on, or null when it does not match. */
export function matchedOn(criteria: Criteria, machine: MachineFacts): string[] | null {
	const on: string[] = [];
	if (present(criteria.mac)) {
		if (!machine.macs.includes(criteria.mac!)) return null;
		on.push(`mac ${criteria.mac}`);
	}
	for (const name of ["uuid", "artifactId", "arch", "firmware"] as const) {
		if (!present(criteria[name])) continue;
		if (machine[name] !== criteria[name]) return null;
		on.push(`${name} ${criteria[name]}`);
	}
	for (const [key, value] of Object.entries(criteria.labels ?? {})) {
		if (!Object.hasOwn(machine.labels ?? {}, key) || machine.labels![key] !== value) return null;
		on.push(`label ${key}=${value}`);
	}
	return on;
}
