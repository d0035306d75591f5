// Image build step: prepare the iPXE object trees the worker builds from, for every platform in
// IPXE_PREPARE_PLATFORMS, exactly as the running worker would (same code, same DATA_DIR), so the
// first job of each platform finds its tree warm.
const { loadConfig } = require("@clusterplatform/core");
const { defaultTarget, ipxeWorkerSettings, sourceTreeFor } = require("@clusterplatform/ipxe");

async function main() {
	const settings = ipxeWorkerSettings();
	if (!settings.sourceDir) throw new Error("IPXE_SOURCE_DIR is not set");
	const tree = sourceTreeFor({ ...settings, sourceDir: settings.sourceDir }, loadConfig());
	for (const platform of settings.preparePlatforms) {
		const started = Date.now();
		await tree.prepare(defaultTarget(platform), console);
		console.log(`prepared ${platform} in ${Math.round((Date.now() - started) / 1000)} s`);
	}
}

main().catch((err) => {
	console.error(err);
	process.exit(1);
});
