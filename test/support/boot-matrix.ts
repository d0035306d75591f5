import fs from "node:fs";
import path from "node:path";

/**
 * The boot matrix (issue 12): each suite that boots a cell records it here, as one JSON file per
 * cell under test-artifacts/boot-matrix/, and `npm run boot-matrix` (test/support/boot-matrix-table.js; also printed after every jest run) turns
 * them into the table the README shows. A cell is either booted, with its times, or unsupported,
 * with the reason; a cell that should have booted and did not fails its test instead.
 */
export type MatrixFirmware = "seabios-x86_64" | "ovmf-x64" | "ovmf-ia32" | "aavmf-arm64";
export type MatrixPath = "iso-cd" | "iso-usb" | "pxe" | "uefi-http";

export interface MatrixCell {
	firmware: MatrixFirmware;
	path: MatrixPath;
	status: "booted" | "unsupported";
	/** Power-on to the embedded (or distributed) script's HTTP request, booted cells. */
	scriptMs?: number;
	/** Power-on to the node's registration, PXE cells that go on to a node. */
	registeredMs?: number;
	/** What booted, in a few words (e.g. "TFTP undionly.kpxe → iPXE → script"). */
	chain?: string;
	/** Why an unsupported cell cannot work with Debian's firmware. */
	reason?: string;
}

export const MATRIX_DIR = path.resolve(__dirname, "../../test-artifacts/boot-matrix");

export function recordCell(cell: MatrixCell): void {
	fs.mkdirSync(MATRIX_DIR, { recursive: true });
	fs.writeFileSync(path.join(MATRIX_DIR, `${cell.firmware}--${cell.path}.json`), `${JSON.stringify({ ...cell, recordedAt: new Date().toISOString() }, null, 2)}\n`);
}
