import fs from "node:fs";
import path from "node:path";

/** One curl call of the seed tutorial, as written there. */
export interface SeedCall {
	title: string;
	method: string;
	url: string;
	body?: unknown;
	query?: Record<string, string>;
}

export const SEED_HOST = "http://services.provisioner.sandbox.cloud.alphahorizon.io";

/** The seed README (../shared/seeds/000_*.txt beside the checkout), or null when it is absent. */
export function seedTutorialPath(): string | null {
	const dir = path.resolve(__dirname, "..", "..", "..", "shared", "seeds");
	if (!fs.existsSync(dir)) return null;
	const file = fs.readdirSync(dir).find((name) => name.startsWith("000_"));
	return file ? path.join(dir, file) : null;
}

/** Single-quoted shell words of a curl command line ('…' never contains a quote in the seed). */
function quoted(text: string): string[] {
	return [...text.matchAll(/'([^']*)'/g)].map((m) => m[1]!);
}

/** The seed's bodies are JSON, except one with a trailing comma that curl sends as it is. */
function parseJsonOrRaw(text: string): unknown {
	try {
		return JSON.parse(text);
	} catch {
		return { raw: text };
	}
}

/**
 * The curl calls of the tutorial's ```bash blocks, in order. Each block holds one call after a
 * `# Title` comment (a few hold two, each with its own comment).
 */
export function parseSeedTutorial(markdown: string): SeedCall[] {
	const calls: SeedCall[] = [];
	for (const block of markdown.matchAll(/```bash\n([\s\S]*?)```/g)) {
		const commands = block[1]!.split(/\n(?=# )/);
		for (const command of commands) {
			if (!/^\s*(# [^\n]*\n)?curl /m.test(command)) continue;
			const title = /^# (.*)$/m.exec(command)?.[1] ?? "";
			const curl = command.slice(command.indexOf("curl "));
			const words = quoted(curl);
			const url = words[words.length - 1]!;
			const call: SeedCall = { title, method: "GET", url };
			const data = /-d '([\s\S]*?)' \\/.exec(curl);
			if (data) {
				call.method = "POST";
				call.body = parseJsonOrRaw(data[1]!);
			}
			const explicit = /-X (PUT|POST|DELETE)/.exec(curl);
			if (explicit) call.method = explicit[1]!;
			if (/curl -G/.test(curl)) {
				call.query = Object.fromEntries([...curl.matchAll(/--data-urlencode '([^=]+)=([^']*)'/g)].map((m) => [m[1]!, m[2]!]));
			}
			calls.push(call);
		}
	}
	return calls;
}

/** The seed's calls against this provisioner: the example host's gateway replaced by `baseUrl`. */
export function seedCallsFor(baseUrl: string, markdown: string): SeedCall[] {
	const rewrite = (value: unknown): unknown =>
		typeof value === "string"
			? value.split(`${SEED_HOST}:30002`).join(baseUrl)
			: Array.isArray(value)
				? value.map(rewrite)
				: value && typeof value === "object"
					? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rewrite(v)]))
					: value;
	return parseSeedTutorial(markdown).map((call) => rewrite(call) as SeedCall);
}

function isRaw(body: unknown): body is { raw: string } {
	return typeof body === "object" && body !== null && typeof (body as { raw?: unknown }).raw === "string";
}

/** Perform one seed call with fetch, as an operator holding `token` (when given). */
export function performSeedCall(call: SeedCall, token?: string): Promise<Response> {
	const url = new URL(call.url);
	for (const [name, value] of Object.entries(call.query ?? {})) url.searchParams.set(name, value);
	return fetch(url, {
		method: call.method,
		headers: {
			...(call.body === undefined ? {} : { "Content-Type": "application/json" }),
			...(token ? { Authorization: `Bearer ${token}` } : {}),
		},
		body: call.body === undefined ? undefined : isRaw(call.body) ? call.body.raw : JSON.stringify(call.body),
	});
}
