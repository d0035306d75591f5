import Mustache from "mustache";
import { LABEL_KEY } from "./fields";

/** The scripts a profile holds as templates, by the field that holds each. */
export const TEMPLATE_FIELDS = ["ipxeScript", "kickstart", "prebootScript", "postbootScript"] as const;
export type TemplateField = (typeof TEMPLATE_FIELDS)[number];

/** Values every machine has: a template may always name them. */
const ALWAYS = ["id", "name", "mac", "macs", "baseUrl", "bootUrl"] as const;
/** Machine fields a machine may lack: named in a template, a machine without one cannot boot it (a boot-time error). */
const MAYBE = ["uuid", "serial", "manufacturer", "product", "arch", "firmware", "artifactId", "hostname"] as const;
/** URLs of the profile's other scripts: there when the profile has that script. */
export const SCRIPT_URLS: Record<string, TemplateField> = { kickstartUrl: "kickstart", prebootUrl: "prebootScript", postbootUrl: "postbootScript" };
/** Only the post-boot script carries the registration token (it is made when that script is rendered). */
const REGISTRATION = ["registrationToken", "registerUrl"] as const;

/** Names a profile's variables may not take: the machine's own values. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set([...ALWAYS, ...MAYBE, ...Object.keys(SCRIPT_URLS), ...REGISTRATION, "labels"]);

export const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

export class TemplateProblem extends Error {}

type Token = [string, string, number, number, Token[]?, number?];

/** A private writer without the global template cache: templates change, and memory stays bounded. */
const writer = new Mustache.Writer();
(writer as unknown as { templateCache: unknown }).templateCache = undefined;

function parse(template: string): Token[] {
	try {
		return writer.parse(template) as unknown as Token[];
	} catch (err) {
		throw new TemplateProblem(`is not a valid template: ${(err as Error).message.split("\n")[0]}`);
	}
}

/** Every value a template names, with whether it sits in a section (a section is a conditional). */
function namesOf(tokens: Token[], inSection = false, found: { name: string; guarded: boolean }[] = []): { name: string; guarded: boolean }[] {
	for (const token of tokens) {
		const [kind, value] = token;
		if (kind === "name" || kind === "&") found.push({ name: value, guarded: inSection });
		else if (kind === "#" || kind === "^") {
			found.push({ name: value, guarded: true });
			namesOf(token[4] ?? [], true, found);
		} else if (kind === ">") throw new TemplateProblem(`names a partial ({{> ${value}}}): templates here have none`);
	}
	return found;
}

/**
 * Checks a template at write time: it parses, uses no partials, and names only values a machine
 * or the profile can give (`{{labels.<key>}}` is checked per machine when it boots). Returns a
 * reason, or null when it is fine.
 */
export function templateProblem(field: TemplateField, template: string, variables: Record<string, string>, scripts: ReadonlySet<TemplateField>): string | null {
	try {
		for (const { name, guarded } of namesOf(parse(template))) {
			if (name === "." && guarded) continue;
			const reason = unknownName(field, name, variables, scripts);
			if (reason) return reason;
		}
		return null;
	} catch (err) {
		if (err instanceof TemplateProblem) return err.message;
		throw err;
	}
}

function unknownName(field: TemplateField, name: string, variables: Record<string, string>, scripts: ReadonlySet<TemplateField>): string | null {
	const [head, ...rest] = name.split(".");
	if (head === "labels") return rest.length === 1 && LABEL_KEY.test(rest[0]!) ? null : `names {{${name}}}: a label is named {{labels.<key>}}`;
	if (rest.length > 0) return `names {{${name}}}: only labels have parts ({{labels.<key>}})`;
	if ((ALWAYS as readonly string[]).includes(name) || (MAYBE as readonly string[]).includes(name)) return null;
	if (name in SCRIPT_URLS) return scripts.has(SCRIPT_URLS[name]!) ? null : `names {{${name}}}, but the profile has no ${SCRIPT_URLS[name]}`;
	if ((REGISTRATION as readonly string[]).includes(name)) return field === "postbootScript" ? null : `names {{${name}}}: only the post-boot script carries the registration token`;
	if (Object.hasOwn(variables, name)) return null;
	return `names {{${name}}}, which is neither a machine's value (${[...ALWAYS, ...MAYBE, "labels.<key>"].join(", ")}) nor one of the profile's variables`;
}

/** A view without a prototype: a template naming "constructor" finds nothing, never a function. */
export function bareObject(entries: Record<string, unknown>): Record<string, unknown> {
	return Object.assign(Object.create(null) as Record<string, unknown>, entries);
}

function lookup(view: Record<string, unknown>, name: string): unknown {
	let value: unknown = view;
	for (const part of name.split(".")) {
		if (value === null || typeof value !== "object" || !Object.hasOwn(value, part)) return undefined;
		value = (value as Record<string, unknown>)[part];
	}
	return value;
}

/** Values the template would print that this machine lacks (sections whose value is absent are skipped, as rendering does). */
export function missingValues(template: string, view: Record<string, unknown>): string[] {
	const missing = new Set<string>();
	const walk = (tokens: Token[]) => {
		for (const token of tokens) {
			const [kind, name] = token;
			if (kind === "name" || kind === "&") {
				if (name !== "." && (lookup(view, name) ?? null) === null) missing.add(name);
			} else if (kind === "#" || kind === "^") {
				const value = lookup(view, name);
				const present = value !== undefined && value !== null && value !== false && value !== "";
				if (present === (kind === "#")) walk(token[4] ?? []);
			}
		}
	};
	walk(parse(template));
	return [...missing];
}

/** The template with the view's values, unescaped: these are shell and iPXE scripts, not HTML. */
export function render(template: string, view: Record<string, unknown>): string {
	return writer.render(template, view, {}, { escape: (value: unknown) => String(value) });
}
