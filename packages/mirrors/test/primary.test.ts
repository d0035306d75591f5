import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parsePrimary, readPrimary } from "../src/repomd";

const HEX = "ab".repeat(32);

function packageXml(name: string, extra = ""): string {
	return `<package type="rpm"><name>${name}</name><arch>noarch</arch><checksum type="sha256" pkgid="YES">${HEX}</checksum>
<size package="1234" installed="2000" archive="2100"/><location href="Packages/${name}-1.0-1.noarch.rpm"/>
<format><rpm:license>MIT</rpm:license><rpm:provides><rpm:entry name="${name}"/></rpm:provides>${extra}</format></package>`;
}

const primary = (packages: string[]) =>
	`<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="${packages.length}">${packages.join("\n")}</metadata>`;

describe("primary.xml", () => {
	it("lists each package's location, checksum and size, and ignores what <format> holds", () => {
		// A <format> element with a location of its own must not replace the package's.
		const xml = primary([packageXml("alpha"), packageXml("bravo", '<location href="../../etc/passwd"/><size package="1"/>')]);
		expect(parsePrimary(xml, "primary.xml")).toEqual([
			{ href: "Packages/alpha-1.0-1.noarch.rpm", checksum: `sha256:${HEX}`, size: 1234 },
			{ href: "Packages/bravo-1.0-1.noarch.rpm", checksum: `sha256:${HEX}`, size: 1234 },
		]);
	});

	it("refuses what would leave the repository or is not metadata, naming the package", () => {
		const escaping = primary([packageXml("alpha").replace('href="Packages/', 'href="../')]);
		expect(() => parsePrimary(escaping, "primary.xml")).toThrow(/primary\.xml package alpha: href "\.\.\/alpha.*must stay inside/);
		const based = primary([packageXml("alpha").replace("<location ", '<location xml:base="http://elsewhere.example/" ')]);
		expect(() => parsePrimary(based, "primary.xml")).toThrow(/xml:base/);
		const sizeless = primary([packageXml("alpha").replace('package="1234" ', "")]);
		expect(() => parsePrimary(sizeless, "primary.xml")).toThrow(/package alpha: no package size/);
		expect(() => parsePrimary("<metadata><package>", "primary.xml")).toThrow(/not valid XML/);
		expect(() => parsePrimary("<repomd/>", "primary.xml")).toThrow(/no <metadata> element/);
	});

	it("streams a large file in chunks to the same answer", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-primary-"));
		try {
			const file = path.join(dir, "primary.xml");
			const count = 20_000;
			fs.writeFileSync(file, primary(Array.from({ length: count }, (_, i) => packageXml(`pkg${i}`))));
			const packages = await readPrimary(file, "primary.xml");
			expect(packages).toHaveLength(count);
			expect(packages[count - 1]).toEqual({ href: `Packages/pkg${count - 1}-1.0-1.noarch.rpm`, checksum: `sha256:${HEX}`, size: 1234 });
			console.log(`primary.xml of ${count} packages (${(fs.statSync(file).size / 1e6).toFixed(1)} MB) read as a stream`);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});
});
