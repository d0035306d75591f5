/**
 * RFC 4180 CSV: fields separated by commas, optionally in double quotes ("" for a quote inside),
 * records by CRLF or LF. Returns the header's names and one object per record (empty cells left
 * out). A malformed file is an Error whose message names the line.
 */
export function parseCsv(text: string, maxRecords: number): { header: string[]; records: { line: number; cells: Record<string, string> }[] } {
	const rows = splitRecords(text.replace(/^\uFEFF/, ""));
	const headerRow = rows.shift();
	if (!headerRow) throw new Error("is empty: the first line names the columns (name,macs,…)");
	const header = headerRow.fields.map((name) => name.trim());
	if (rows.length > maxRecords) throw new Error(`has ${rows.length} records; at most ${maxRecords} per import`);
	const records = rows
		.filter((row) => row.fields.some((field) => field.trim() !== ""))
		.map((row) => {
			if (row.fields.length > header.length) throw new Error(`line ${row.line} has ${row.fields.length} fields; the header names ${header.length}`);
			const cells: Record<string, string> = {};
			row.fields.forEach((value, index) => {
				if (value.trim() !== "") cells[header[index]!] = value.trim();
			});
			return { line: row.line, cells };
		});
	return { header, records };
}

function splitRecords(text: string): { line: number; fields: string[] }[] {
	const rows: { line: number; fields: string[] }[] = [];
	let fields: string[] = [];
	let field = "";
	let quoted = false;
	let line = 1;
	let rowLine = 1;
	let at = 0;
	const endField = () => {
		fields.push(field);
		field = "";
	};
	const endRow = () => {
		endField();
		rows.push({ line: rowLine, fields });
		fields = [];
	};
	while (at < text.length) {
		const char = text[at]!;
		if (quoted) {
			if (char === '"' && text[at + 1] === '"') {
				field += '"';
				at += 2;
				continue;
			}
			if (char === '"') quoted = false;
			else {
				if (char === "\n") line++;
				field += char;
			}
			at++;
			continue;
		}
		if (char === '"') {
			if (field.trim() !== "") throw new Error(`line ${line} has a quote inside an unquoted field`);
			field = "";
			quoted = true;
		} else if (char === ",") endField();
		else if (char === "\n" || char === "\r") {
			if (char === "\r" && text[at + 1] === "\n") at++;
			endRow();
			line++;
			rowLine = line;
		} else field += char;
		at++;
	}
	if (quoted) throw new Error(`line ${rowLine} opens a quote that never closes`);
	if (field !== "" || fields.length > 0) endRow();
	return rows;
}
