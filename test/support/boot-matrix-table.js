// The boot matrix as a Markdown table, from the cells the boot suites recorded under
// test-artifacts/boot-matrix/ (see boot-matrix.ts). Used by the summary reporter after a run and by
// `npm run boot-matrix`; writes test-artifacts/boot-matrix.md.
const fs = require("node:fs");
const path = require("node:path");

const ROOT = path.resolve(__dirname, "../..");
const DIR = path.join(ROOT, "test-artifacts/boot-matrix");
const FIRMWARES = [
	["seabios-x86_64", "SeaBIOS, x86_64"],
	["ovmf-x64", "OVMF x64 (ovmf)"],
	["ovmf-ia32", "OVMF ia32 (ovmf-ia32)"],
	["aavmf-arm64", "AAVMF arm64 (qemu-efi-aarch64)"],
];
const PATHS = [
	["iso-cd", "ISO as CD"],
	["iso-usb", "ISO as USB disk"],
	["pxe", "PXE through a distributor"],
	["uefi-http", "UEFI HTTP boot through a distributor"],
];
/** The cells issue 12 asks for; the others are no cell ("–"). */
const WANTED = {
	"seabios-x86_64": ["iso-cd", "iso-usb", "pxe"],
	"ovmf-x64": ["iso-cd", "iso-usb", "pxe", "uefi-http"],
	"ovmf-ia32": ["iso-cd", "iso-usb", "pxe"],
	"aavmf-arm64": ["iso-cd", "pxe", "uefi-http"],
};

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

function describeCell(cell) {
	if (!cell) return "not run";
	if (cell.status === "unsupported") return `not supported: ${cell.reason}`;
	const times = [`script ${seconds(cell.scriptMs)}`, cell.registeredMs ? `registered ${seconds(cell.registeredMs)}` : null].filter(Boolean).join(", ");
	return `booted (${times})${cell.chain ? `: ${cell.chain}` : ""}`;
}

function bootMatrixTable() {
	if (!fs.existsSync(DIR)) return null;
	const cells = {};
	for (const name of fs.readdirSync(DIR).filter((n) => n.endsWith(".json"))) {
		const cell = JSON.parse(fs.readFileSync(path.join(DIR, name), "utf8"));
		cells[`${cell.firmware}--${cell.path}`] = cell;
	}
	const lines = [`| firmware | ${PATHS.map(([, title]) => title).join(" | ")} |`, `|---|${PATHS.map(() => "---").join("|")}|`];
	for (const [firmware, title] of FIRMWARES) {
		const row = PATHS.map(([p]) => (WANTED[firmware].includes(p) ? describeCell(cells[`${firmware}--${p}`]) : "–"));
		lines.push(`| ${title} | ${row.join(" | ")} |`);
	}
	const table = `${lines.join("\n")}\n`;
	fs.writeFileSync(path.join(ROOT, "test-artifacts/boot-matrix.md"), table);
	return table;
}

module.exports = { bootMatrixTable };
if (require.main === module) process.stdout.write(bootMatrixTable() ?? "no boot matrix cells recorded (run the boot suites first)\n");
