import { parseCommandLine, parseDuration } from "../src/client/args";
import { CliError } from "../src/client/errors";
import { exitCodeOfScript } from "../src/client/node";
import { ProgressBar } from "../src/client/progress";

/** A writable that records what a terminal (or a log file) would have received. */
function stream(isTTY: boolean) {
	const written: string[] = [];
	return { written, stream: { isTTY, write: (text: string) => written.push(text) } as unknown as NodeJS.WriteStream };
}

describe("client command line", () => {
	it("keeps the CLI's own options apart from request fields, in every accepted spelling", () => {
		const line = parseCommandLine(["build", "iso", "--label", "A B", "--grubImgId=3", "-F", "url=http://x/y", "--private", "--wait", "--json", "--timeout", "5m", "--no-progress"]);
		expect(line.positionals).toEqual(["build", "iso"]);
		expect(line.fields).toEqual([["label", "A B"], ["grubImgId", "3"], ["private", "true"], ["url", "http://x/y"]]);
		expect(line.options).toMatchObject({ wait: true, json: true, timeout: "5m", progress: false, url: undefined });
	});

	it("takes a bare unknown flag followed by another option as true, and --no-<field> as false", () => {
		expect(parseCommandLine(["create", "sshkeys", "--private", "--file", "k"]).fields).toEqual([["private", "true"]]);
		expect(parseCommandLine(["create", "sshkeys", "--no-private"]).fields).toEqual([["private", "false"]]);
	});

	it.each([[["-x"]], [["-F", "novalue"]], [["--url"]]])("refuses %j as a usage error (exit 2)", (argv) => {
		expect(() => parseCommandLine(argv)).toThrow(CliError);
		try {
			parseCommandLine(argv);
		} catch (err) {
			expect((err as CliError).exitCode).toBe(2);
		}
	});

	it("reads durations with units and refuses nonsense", () => {
		expect(parseDuration("90", "--timeout")).toBe(90_000);
		expect(parseDuration("10m", "--timeout")).toBe(600_000);
		expect(parseDuration("250ms", "--timeout")).toBe(250);
		expect(() => parseDuration("soon", "--timeout")).toThrow(/--timeout must be a duration/);
		expect(() => parseDuration("0", "--timeout")).toThrow(/more than zero/);
	});

	it("exits like a shell would for a script's end: its code, or 128+N for signal N", () => {
		expect(exitCodeOfScript({ code: 3, signal: null, stdout: "", stderr: "" })).toBe(3);
		expect(exitCodeOfScript({ code: null, signal: "KILL", stdout: "", stderr: "" })).toBe(137);
		expect(exitCodeOfScript({ code: null, signal: "SIGTERM", stdout: "", stderr: "" })).toBe(143);
	});
});

describe("progress bar", () => {
	it("redraws one line on a terminal and ends it once", () => {
		const tty = stream(true);
		const bar = new ProgressBar("isos 4", tty.stream);
		bar.update(0, "queued");
		bar.update(0, "queued");
		bar.update(52.5, "working");
		bar.update(100, "done");
		bar.finish();
		expect(tty.written).toHaveLength(4);
		expect(tty.written[1]).toBe(`\r\x1b[2Kisos 4 [${"#".repeat(16)}${"-".repeat(14)}]  52% working`);
		expect(tty.written.slice(0, 3).every((w) => w.startsWith("\r"))).toBe(true);
		expect(tty.written[3]).toBe("\n");
	});

	it("prints a line per change off a terminal, or per step for downloads", () => {
		const log = stream(false);
		const bar = new ProgressBar("isos 4", log.stream);
		for (const [p, s] of [[0, "queued"], [0, "queued"], [8.75, "working"], [17.5, "working"], [100, "done"]] as const) bar.update(p, s);
		bar.finish();
		expect(log.written).toEqual(["isos 4: queued 0%\n", "isos 4: working 8%\n", "isos 4: working 17%\n", "isos 4: done 100%\n"]);
		const download = stream(false);
		const stepped = new ProgressBar("download dist.iso", download.stream, true, 25);
		for (let p = 0; p <= 100; p += 3) stepped.update(p);
		stepped.update(100);
		expect(download.written).toEqual(["download dist.iso: 27%\n", "download dist.iso: 54%\n", "download dist.iso: 81%\n", "download dist.iso: 100%\n"]);
	});
});
