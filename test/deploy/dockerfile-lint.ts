import { DockerfileParser, type Instruction } from "dockerfile-ast";

/** What a Dockerfile of this project must do; problems are named so a failure says what to fix. */
export interface DockerfileFacts {
	/** FROM images after ARG defaults are substituted (earlier stages left out). */
	bases: string[];
	/** The final stage's CMD in exec form, or null. */
	cmd: string[] | null;
	/** The final stage's effective USER (inherited from the base image when unset: null). */
	user: string | null;
	healthcheck: boolean;
	/** Debian packages installed with apt-get in any RUN of the final stage. */
	aptPackages: string[];
	/** ARG names declared before the first FROM. */
	globalArgs: Record<string, string>;
	/** Every RUN in shell form, continuation lines joined (what /bin/sh -c receives). */
	runCommands: string[];
	problems: string[];
}

function substitute(text: string, args: Record<string, string>): string {
	return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (whole, braced, bare) => args[braced ?? bare] ?? whole);
}

function finalStage(instructions: Instruction[]): Instruction[] {
	const lastFrom = instructions.map((i) => i.getKeyword()).lastIndexOf("FROM");
	return instructions.slice(lastFrom);
}

/** Parse and check: pinned base tags (no :latest, no untagged), no remote ADD, CMD and HEALTHCHECK present. */
export function lintDockerfile(content: string, options: { rootAllowed?: boolean } = {}): DockerfileFacts {
	const dockerfile = DockerfileParser.parse(content);
	const instructions = dockerfile.getInstructions();
	const problems: string[] = [];
	const globalArgs = Object.fromEntries(
		dockerfile
			.getInitialARGs()
			.map((arg) => arg.getProperty())
			.filter((p) => p !== null)
			.map((p) => [p!.getName(), p!.getValue() ?? ""]),
	);
	const stages = new Set<string>();
	const bases: string[] = [];
	for (const from of dockerfile.getFROMs()) {
		const [image = "", , stage] = from.getArgumentsContent()?.split(/\s+/) ?? [];
		const resolved = substitute(image, globalArgs);
		if (!stages.has(resolved)) {
			bases.push(resolved);
			if (resolved.includes("$")) problems.push(`FROM ${image}: an ARG without a default`);
			else if (!/[:@]/.test(resolved.split("/").pop()!)) problems.push(`FROM ${resolved}: no tag (pin one)`);
			else if (/:latest$/.test(resolved)) problems.push(`FROM ${resolved}: :latest is not pinned`);
		}
		if (stage) stages.add(stage);
	}
	if (bases.length === 0) problems.push("no FROM");
	for (const add of instructions.filter((i) => i.getKeyword() === "ADD")) {
		if (/\b(https?|ftp|git):\/\//.test(add.getArgumentsContent() ?? "")) problems.push(`ADD of a remote URL: ${add.getArgumentsContent()}`);
	}
	const final = finalStage(instructions);
	const cmdInstruction = final.filter((i) => i.getKeyword() === "CMD").pop();
	let cmd: string[] | null = null;
	if (!cmdInstruction) problems.push("no CMD in the final stage");
	else {
		try {
			cmd = JSON.parse(cmdInstruction.getArgumentsContent() ?? "");
		} catch {
			problems.push("CMD is not in exec (JSON) form");
		}
	}
	const users = final.filter((i) => i.getKeyword() === "USER").map((i) => (i.getArgumentsContent() ?? "").trim());
	const user = users.pop() ?? null;
	if (user !== null && /^(root|0)(:|$)/.test(user) && !options.rootAllowed) problems.push("the final USER is root");
	if (!final.some((i) => i.getKeyword() === "HEALTHCHECK")) problems.push("no HEALTHCHECK in the final stage");
	const aptPackages = final
		.filter((i) => i.getKeyword() === "RUN")
		.flatMap((i) => [...(i.getArgumentsContent() ?? "").matchAll(/apt-get install((?:\s+(?!&&)[^\s&|;]+)+)/g)])
		.flatMap((m) => m[1]!.trim().split(/\s+/).filter((word) => !word.startsWith("-") && word !== "\\"));
	const runCommands = instructions
		.filter((i) => i.getKeyword() === "RUN")
		.map((i) => i.getArgumentsContent() ?? "")
		.filter((command) => !command.trimStart().startsWith("["));
	return { bases, cmd, user, healthcheck: final.some((i) => i.getKeyword() === "HEALTHCHECK"), aptPackages, globalArgs, runCommands, problems };
}
