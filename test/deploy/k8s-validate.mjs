// Validates Kubernetes objects against the API's OpenAPI schemas (kubernetes-models, ESM only,
// hence a child process of the jest tests). stdin: JSON array of objects; stdout: JSON array of
// {kind, name, error} with error null when the object is valid.
import { readFileSync } from "node:fs";

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
	const kind = object?.kind;
	const name = object?.metadata?.name ?? null;
	try {
		if (typeof object?.apiVersion !== "string" || typeof kind !== "string") throw new Error("apiVersion and kind are required");
		let models;
		try {
			models = await import(`kubernetes-models/${object.apiVersion}`);
		} catch {
			throw new Error(`unknown apiVersion ${object.apiVersion}`);
		}
		const Model = models[kind];
		if (typeof Model !== "function") throw new Error(`unknown kind ${kind} in ${object.apiVersion}`);
		new Model(object).validate();
		results.push({ kind, name, error: null });
	} catch (err) {
		results.push({ kind, name, error: String(err?.message ?? err) });
	}
}
process.stdout.write(JSON.stringify(results));
