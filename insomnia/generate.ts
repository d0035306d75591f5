/**
 * Generates insomnia/workspace.json from the API this checkout serves: it starts every catalogue
 * service that has REST routes (in this process, on loopback, in a temp data dir), takes the
 * gateway's OpenAPI document and turns it into an Insomnia v4 export, with the seed tutorial's
 * example bodies where the seed is present beside the checkout (../shared/seeds).
 *
 *   npm run insomnia            (builds, then runs insomnia/write.ts)
 *
 * Runs under jest on the sources and under Node's type stripping on the built packages.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceSchema } from "moleculer";
import { CATALOGUE, startProvisioner } from "@clusterplatform/cli";
import { loadConfig } from "@clusterplatform/core";
import { insomniaExport, type ExampleCall, type InsomniaExport, type OpenApiDocument } from "@clusterplatform/gateway";
import { parseSeedTutorial, SEED_HOST } from "../test/support/seed.ts";

export const WORKSPACE_FILE = "workspace.json";

function hasRest(schema: Partial<ServiceSchema> | undefined, seen = new Set<unknown>()): boolean {
	if (!schema || seen.has(schema)) return false;
	seen.add(schema);
	const actions = Object.values(schema.actions ?? {}) as { rest?: unknown }[];
	if (actions.some((action) => action && typeof action === "object" && action.rest)) return true;
	const mixins = ([] as Partial<ServiceSchema>[]).concat((schema.mixins ?? []) as Partial<ServiceSchema>[]);
	return mixins.some((mixin) => hasRest(mixin, seen));
}

/** Catalogue services that publish REST routes, plus the gateway that serves them. */
export function apiServiceNames(): string[] {
	return Object.keys(CATALOGUE).filter((name) => name === "gateway" || hasRest(CATALOGUE[name]!.schema));
}

/** The seed's calls as examples: its gateway host becomes Insomnia's {{ _.base_url }}. */
export function seedExamples(seedFile: string | null): ExampleCall[] {
	if (!seedFile || !fs.existsSync(seedFile)) return [];
	const markdown = fs.readFileSync(seedFile, "utf8").split(`${SEED_HOST}:30002`).join("{{ _.base_url }}");
	return parseSeedTutorial(markdown).map((call) => {
		const url = new URL(call.url.replace("{{ _.base_url }}", "http://base"));
		const query = { ...Object.fromEntries(url.searchParams), ...call.query };
		return { title: call.title, method: call.method, path: url.pathname, body: call.body, query: Object.keys(query).length ? query : undefined };
	});
}

/** ../shared/seeds/000_*.txt beside the checkout, or null. */
export function defaultSeedFile(repoRoot: string): string | null {
	const dir = path.resolve(repoRoot, "..", "shared", "seeds");
	const name = fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => f.startsWith("000_")) : undefined;
	return name ? path.join(dir, name) : null;
}

/** The OpenAPI document of a provisioner running every API service (SQLite, private Redis). */
export async function liveOpenApiDocument(): Promise<OpenApiDocument> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-insomnia-"));
	try {
		// Auth on, as deployed: the document then says which calls need a token.
		const config = loadConfig({ PORT: "0", HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "warn", NODE_ID: `insomnia-${process.pid}`, AUTH: "on" });
		const provisioner = await startProvisioner(config, apiServiceNames());
		try {
			return (await provisioner.broker.call("gateway.openapi")) as OpenApiDocument;
		} finally {
			await provisioner.stop();
		}
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}

export async function generateWorkspace(repoRoot: string): Promise<InsomniaExport> {
	return insomniaExport(await liveOpenApiDocument(), seedExamples(defaultSeedFile(repoRoot)));
}

export function serializeWorkspace(workspace: InsomniaExport): string {
	return `${JSON.stringify(workspace, null, "\t")}\n`;
}
