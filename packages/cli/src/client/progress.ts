/**
 * Progress of a build or a download on stderr (stdout stays for the result): on a terminal one
 * line redrawn in place, otherwise one line per change, so logs of CI jobs stay readable.
 */
export class ProgressBar {
	private last = "";
	private drawn = false;
	private lastLine = 0;
	private lastState = "";

	constructor(
		private readonly label: string,
		private readonly stream: NodeJS.WriteStream = process.stderr,
		private readonly enabled = true,
		/** Off a terminal, a line only every this many percent (a download moves in many small steps). */
		private readonly lineStep = 1,
	) {}

	get tty(): boolean {
		return this.stream.isTTY === true;
	}

	update(percent: number, state = ""): void {
		if (!this.enabled) return;
		const value = Math.max(0, Math.min(100, Math.floor(percent)));
		const key = `${value} ${state}`;
		if (key === this.last) return;
		this.last = key;
		if (this.tty) {
			const width = 30;
			const filled = Math.round((value / 100) * width);
			const bar = `${"#".repeat(filled)}${"-".repeat(width - filled)}`;
			this.stream.write(`\r\x1b[2K${this.label} [${bar}] ${String(value).padStart(3)}% ${state}`);
			this.drawn = true;
		} else {
			if (state === this.lastState && value < 100 && value - this.lastLine < this.lineStep) return;
			this.lastLine = value;
			this.lastState = state;
			this.stream.write(`${this.label}: ${state ? `${state} ` : ""}${value}%\n`);
		}
	}

	/** End the redrawn line so what follows starts on its own. */
	finish(): void {
		if (this.drawn) this.stream.write("\n");
		this.drawn = false;
	}
}
