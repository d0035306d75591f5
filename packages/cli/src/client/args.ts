import { parseArgs, type ParseArgsConfig } from "node:util";
import { usageError } from "./errors";

/** The CLI's own options; any other --name is a field of the request (see fieldFlags). */
const OPTIONS = {
	url: { type: "string" },
	token: { type: "string" },
	"token-file": { type: "string" },
	json: { type: "boolean" },
	quiet: { type: "boolean", short: "q" },
	help: { type: "boolean", short: "h" },
	wait: { type: "boolean" },
	timeout: { type: "string" },
	output: { type: "string", short: "o" },
	value: { type: "string" },
	file: { type: "string", short: "f" },
	field: { type: "string", short: "F", multiple: true },
	progress: { type: "boolean", default: true },
} as const satisfies ParseArgsConfig["options"];

export interface CommandLine {
	positionals: string[];
	options: {
		url?: string;
		token?: string;
		tokenFile?: string;
		json: boolean;
		quiet: boolean;
		help: boolean;
		wait: boolean;
		timeout?: string;
		output?: string;
		value?: string;
		file?: string;
		progress: boolean;
	};
	/** Request fields in the order given: `--name=value`, `--name value`, `-F name=value`; a bare `--name` is "true". */
	fields: [string, string][];
}

/**
 * node:util parseArgs for the CLI's own options; unknown options are request fields. An unknown
 * `--name` takes the next argument as its value unless that is another option, so put fields after
 * the positional words (or write `--name=value`). `-F name=value` reaches fields whose names are
 * also CLI options (e.g. a field called `url`).
 */
export function parseCommandLine(argv: string[]): CommandLine {
	let parsed: ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; strict: false; allowPositionals: true; allowNegative: true; tokens: true }>>;
	try {
		parsed = parseArgs({ args: argv, options: OPTIONS, strict: false, allowPositionals: true, allowNegative: true, tokens: true });
	} catch (err) {
		usageError((err as Error).message);
	}
	const tokens = parsed.tokens;
	const positionals: string[] = [];
	const fields: [string, string][] = [];
	const consumed = new Set<number>();
	for (let i = 0; i < tokens.length; i++) {
		const token = tokens[i]!;
		if (token.kind === "positional") {
			if (!consumed.has(i)) positionals.push(token.value);
			continue;
		}
		if (token.kind !== "option" || token.name in OPTIONS) continue;
		if (token.rawName.length === 2 && !token.rawName.startsWith("--")) usageError(`unknown option ${token.rawName}`);
		if (token.inlineValue) {
			fields.push([token.name, token.value ?? ""]);
			continue;
		}
		// allowNegative has already taken "no-" off the name.
		if (token.rawName.startsWith("--no-")) {
			fields.push([token.name, "false"]);
			continue;
		}
		const next = tokens[i + 1];
		if (next?.kind === "positional") {
			consumed.add(i + 1);
			fields.push([token.name, next.value]);
		} else fields.push([token.name, "true"]);
	}
	for (const entry of (parsed.values.field as string[] | undefined) ?? []) {
		const at = entry.indexOf("=");
		if (at <= 0) usageError(`-F/--field takes name=value, got "${entry}"`);
		fields.push([entry.slice(0, at), entry.slice(at + 1)]);
	}
	const values = parsed.values;
	const text = (name: keyof typeof OPTIONS) => {
		const value = values[name];
		if (value === undefined) return undefined;
		if (typeof value !== "string") usageError(`--${name} needs a value`);
		return value;
	};
	return {
		positionals,
		fields,
		options: {
			url: text("url"),
			token: text("token"),
			tokenFile: text("token-file"),
			json: values.json === true,
			quiet: values.quiet === true,
			help: values.help === true,
			wait: values.wait === true,
			timeout: text("timeout"),
			output: text("output"),
			value: text("value"),
			file: text("file"),
			progress: values.progress !== false,
		},
	};
}

/** "90", "90s", "10m", "1h" → milliseconds. */
export function parseDuration(value: string, option: string): number {
	const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
	if (!match) usageError(`${option} must be a duration like 90, 90s, 10m or 1h, got "${value}"`);
	const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? "s") as "ms" | "s" | "m" | "h"];
	const ms = Number(match[1]) * factor;
	if (!(ms > 0)) usageError(`${option} must be more than zero`);
	return ms;
}
