import { ApiClient, connectionFrom } from "./api";
import type { CommandLine } from "./args";
import { usageError } from "./errors";
import type { Output } from "./output";
import { loadResources, type Resource } from "./resources";

/** What every client command gets: the parsed command line, the API, and how to print. */
export class CommandContext {
	readonly api: ApiClient;
	readonly out: Output;
	private resources?: Map<string, Resource>;

	constructor(
		readonly line: CommandLine,
		env: NodeJS.ProcessEnv,
	) {
		this.api = new ApiClient(connectionFrom(line.options, env));
		this.out = { json: line.options.json, quiet: line.options.quiet, value: line.options.value };
	}

	/** The gateway's resources (read once per command from /api/openapi.json). */
	async allResources(): Promise<Map<string, Resource>> {
		this.resources ??= await loadResources(this.api);
		return this.resources;
	}

	/** Progress bars: unless --no-progress; with -q or --value only on a terminal (stderr), as the output is likely captured by $(…). */
	get showProgress(): boolean {
		const capturable = this.out.quiet || this.out.value !== undefined;
		return this.line.options.progress && (!capturable || process.stderr.isTTY === true);
	}

	/** The positional word at `index`, or a usage error saying what belongs there. */
	word(index: number, what: string): string {
		const value = this.line.positionals[index];
		if (value === undefined) usageError(`missing ${what}`);
		return value;
	}

	/** No fields on commands that take none: a typo must not pass silently. */
	noFields(command: string): void {
		if (this.line.fields.length) usageError(`${command} takes no fields, got --${this.line.fields[0]![0]}`);
	}
}

/** A path segment from the command line, never able to leave its place in the URL. */
export function segment(value: string): string {
	return encodeURIComponent(value);
}
