import { parseCommandLine } from "./args";
import { buildCommand, waitCommand } from "./build";
import { CommandContext } from "./context";
import { actionCommand, createCommand, deleteCommand, getCommand, listCommand, resourcesCommand, updateCommand } from "./crud";
import { distributorCommand } from "./distributor";
import { downloadCommand } from "./download";
import { machinesCommand, machinesWaitCommand, powerCommand, provisionCommand } from "./machines";
import { CliError, EXIT, EXIT_CODES_HELP } from "./errors";
import { nodeCommand } from "./node";

export { CliError, EXIT, EXIT_CODES_HELP } from "./errors";

export const CLIENT_USAGE = `Operating a running provisioner (over its REST API):
  clusterplatform resources                              what this gateway serves
  clusterplatform list <resource> [--search s --searchFields f --page N --pageSize N]
  clusterplatform get <resource> <id>
  clusterplatform create <resource> [--file F|-] [--<field> <value> …]
  clusterplatform update <resource> <id> [--<field> <value> …]
  clusterplatform delete <resource> <id …>
  clusterplatform action <resource> <id> <name> [--<field> <value> …]   e.g. action mirrors 3 sync
  clusterplatform build ipxe|grub|syslinux|iso [--<field> <value> …] [--wait [--timeout 10m]]
  clusterplatform wait <resource> <id> [--timeout 10m]
  clusterplatform download <resource> <id> [-o FILE|-] [--wait]
  clusterplatform distributor update <id|artifactId> --ipxePxeUefiUrl U --ipxePxeBiosUrl U --device D --range IP
      [--ipxePxeUefiIa32Url U] [--ipxePxeUefiArm64Url U] [--scriptUrl U]
  clusterplatform distributor on|off <id|artifactId>
  clusterplatform node run <localnode-id> <script-file|-> [--timeout 5m] [--sshkeyId N]
  clusterplatform node hostkey <localnode-id> [--hostKey SHA256:…]   show the node's host key; accept one
  clusterplatform machines list|get|create|update|delete …   as list machines … (e.g. --status discovered, --mac M, --label rack=r1)
  clusterplatform machines import <file|->                    CSV with a header line, or JSON (an array); all or nothing
  clusterplatform machines plan <id>                          the profile, selector and why, and the rendered scripts
  clusterplatform machines wait <id…> [--timeout 30m]         a line per status change until each is ready or failed
  clusterplatform power <machine-id> on|off|cycle|status      through the machine's BMC (from its site's distributor)
  clusterplatform provision <machine-id…> [--profile N] [--wait [--timeout 30m]]

  Resources and their fields come from the gateway's own /api/openapi.json; \`create <resource>
  --help\` lists the fields. Field values: numbers and true/false are typed by the API's schema,
  @FILE reads a text value from a file (@- stdin), -F name=value reaches a field whose name is
  also an option here (e.g. url). --file F fills a text registry's "text" (mainscripts …).
  \`provision --wait\` and \`machines wait\` print a line per machine (stderr) as its status changes,
  then the machines (stdout); they exit 1 if any failed, 5 if --timeout ran out first.
  \`node run\` streams the script's stdout and stderr as the node produces them (a gateway
  without streaming sends them when the script has ended) and exits with the script's exit code.

Options:
  --url URL          the gateway (CLUSTERPLATFORM_URL; default http://127.0.0.1:3000)
  --token T          bearer token (CLUSTERPLATFORM_TOKEN); --token-file F (CLUSTERPLATFORM_TOKEN_FILE)
  --json             print the API's JSON (for jq and scripts)
  --value FIELD      print only that field of the answer, raw (e.g. --value url)
  -q, --quiet        print only ids (or the downloaded file's name); progress only on a terminal
  --no-progress      no progress bar (it goes to stderr: one redrawn line on a terminal, else a line per change)

${EXIT_CODES_HELP}`;

const COMMANDS: Record<string, (ctx: CommandContext) => Promise<void | number>> = {
	resources: resourcesCommand,
	list: listCommand,
	get: getCommand,
	create: createCommand,
	update: updateCommand,
	delete: deleteCommand,
	action: actionCommand,
	build: buildCommand,
	// Machines are no builds: `wait machines <id…>` waits for ready or failed.
	wait: (ctx) => (ctx.line.positionals[1] === "machines" ? machinesWaitCommand(ctx) : waitCommand(ctx)),
	download: downloadCommand,
	distributor: distributorCommand,
	node: nodeCommand,
	machines: machinesCommand,
	power: powerCommand,
	provision: provisionCommand,
};

export function isClientCommand(argv: string[]): boolean {
	const [command, sub] = argv;
	// `clusterplatform distributor` alone runs a distributor worker; with a verb it commands one.
	if (command === "distributor") return sub !== undefined;
	return command !== undefined && command in COMMANDS;
}

/** Run one client command; resolves to the exit code. Errors are printed here, one per line. */
export async function runClient(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
	try {
		const line = parseCommandLine(argv);
		const command = COMMANDS[line.positionals[0] ?? ""];
		if (!command) throw new CliError(`unknown command "${line.positionals[0]}"`, EXIT.usage);
		if (line.options.help && line.positionals.length < 2) {
			console.log(CLIENT_USAGE);
			return EXIT.ok;
		}
		const code = await command(new CommandContext(line, env));
		return typeof code === "number" ? code : EXIT.ok;
	} catch (err) {
		if (!(err instanceof CliError)) throw err;
		console.error(`clusterplatform: ${err.message}`);
		for (const problem of err.problems) console.error(`  ${problem.field}: ${problem.message}`);
		return err.exitCode;
	}
}
