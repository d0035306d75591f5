import fs from "node:fs";
import { XMLParser } from "fast-xml-parser";
import sax from "sax";
import { permanentFailure } from "@clusterplatform/core";

/** One metadata file repomd.xml lists (primary, filelists, other, comps, updateinfo…). */
export interface RepomdData {
	type: string;
	href: string;
	checksum: string;
	size: number | null;
}

/** One package primary.xml lists. */
export interface PrimaryPackage {
	href: string;
	checksum: string;
	size: number;
}

/** Checksum types repodata uses, as Node's crypto names them ("sha" is yum's old name for SHA-1). */
const CHECKSUM_TYPES: Record<string, string> = { sha: "sha1", sha1: "sha1", sha224: "sha224", sha256: "sha256", sha384: "sha384", sha512: "sha512" };

const parser = new XMLParser({
	ignoreAttributes: false,
	attributeNamePrefix: "@",
	removeNSPrefix: false,
	parseTagValue: false,
	parseAttributeValue: false,
	processEntities: true,
	isArray: (name) => name === "data",
});

/**
 * A path inside the repository from a metadata `href`: relative, no "..", no scheme, no query, and
 * no xml:base (which points outside the mirrored tree). Anything else fails the sync, naming it.
 */
export function safeHref(href: unknown, where: string, xmlBase?: unknown): string {
	if (xmlBase !== undefined) permanentFailure(`${where}: xml:base="${String(xmlBase).slice(0, 200)}" points outside the repository; refused`);
	if (typeof href !== "string" || href === "") permanentFailure(`${where}: a location without href`);
	const problem =
		/^[A-Za-z][A-Za-z0-9+.-]*:/.test(href) ? "is an absolute URL"
		: href.startsWith("/") ? "is an absolute path"
		: /[\\?#%\u0000-\u0020\u007f]/.test(href) ? "holds a backslash, ?, #, % or a control character"
		: href.split("/").some((part) => part === ".." || part === "." || part === "") ? "has an empty, . or .. segment"
		: null;
	if (problem) permanentFailure(`${where}: href "${href.slice(0, 200)}" ${problem}; it must stay inside the repository`);
	return href;
}

/**
 * A field of a parsed XML element (attributes as "@name", text as "#text", children by tag), or
 * undefined: the document is untrusted, so nothing about its shape is assumed.
 */
function field(element: unknown, name: string): unknown {
	return typeof element === "object" && element !== null ? (element as Record<string, unknown>)[name] : undefined;
}

function checksumOf(node: unknown, where: string): string {
	const type = CHECKSUM_TYPES[String(field(node, "@type") ?? "").toLowerCase()];
	const value = String(field(node, "#text") ?? "").trim().toLowerCase();
	if (!type) permanentFailure(`${where}: checksum type "${String(field(node, "@type"))}" is not one of ${Object.keys(CHECKSUM_TYPES).join(", ")}`);
	if (!/^[0-9a-f]{32,128}$/.test(value)) permanentFailure(`${where}: checksum "${value.slice(0, 200)}" is not a hex digest`);
	return `${type}:${value}`;
}

function parse(xml: string, what: string): unknown {
	try {
		return parser.parse(xml);
	} catch (err) {
		return permanentFailure(`${what}: not valid XML: ${(err as Error).message.slice(0, 200)}`);
	}
}

export function parseRepomd(xml: string): RepomdData[] {
	const entries = field(field(parse(xml, "repodata/repomd.xml"), "repomd"), "data");
	if (!Array.isArray(entries)) permanentFailure("repodata/repomd.xml: no <repomd> with <data> entries");
	return entries.map((data: unknown, index: number) => {
		const where = `repodata/repomd.xml <data type="${String(field(data, "@type") ?? index)}">`;
		const location = field(data, "location");
		const size = Number(field(data, "size"));
		return {
			type: String(field(data, "@type") ?? ""),
			href: safeHref(field(location, "@href"), where, field(location, "@xml:base")),
			checksum: checksumOf(field(data, "checksum"), where),
			size: Number.isSafeInteger(size) && size >= 0 ? size : null,
		};
	});
}

/**
 * primary.xml read as a stream (SAX): Fedora Everything's is hundreds of megabytes uncompressed,
 * far too much to hold as one string and one object tree, and one synchronous parse of it would
 * stall the worker past its queue lock. Only a package's own location, checksum, size and name
 * are kept.
 */
class PrimaryReader {
	private readonly parser = sax.parser(true, { trim: false, normalize: false });
	readonly packages: PrimaryPackage[] = [];
	private depth = 0;
	private packageDepth = -1;
	private current: { name?: string; location?: Record<string, string>; checksumType?: string; checksum: string; size?: string; inChecksum: boolean; inName: boolean } | null = null;
	private sawMetadata = false;

	constructor(private readonly where: string) {
		this.parser.onopentag = (tag) => this.open(tag.name, tag.attributes as Record<string, string>);
		this.parser.onclosetag = (name) => this.close(name);
		this.parser.ontext = (text) => this.text(text);
		this.parser.oncdata = (text) => this.text(text);
		this.parser.onerror = (err) => permanentFailure(`${where}: not valid XML: ${err.message.split("\n")[0]!.slice(0, 200)}`);
	}

	write(chunk: string): void {
		this.parser.write(chunk);
	}

	end(): PrimaryPackage[] {
		this.parser.close();
		if (!this.sawMetadata) permanentFailure(`${this.where}: no <metadata> element`);
		return this.packages;
	}

	private open(name: string, attributes: Record<string, string>): void {
		this.depth++;
		if (this.depth === 1) this.sawMetadata = name === "metadata";
		if (name === "package" && this.depth === 2) {
			this.packageDepth = this.depth;
			this.current = { checksum: "", inChecksum: false, inName: false };
			return;
		}
		// Only the package's own children: <format> holds rpm:* entries of its own.
		if (!this.current || this.depth !== this.packageDepth + 1) return;
		if (name === "location") this.current.location = attributes;
		else if (name === "checksum") {
			this.current.checksumType = attributes.type;
			this.current.inChecksum = true;
		} else if (name === "size") this.current.size = attributes.package;
		else if (name === "name") this.current.inName = true;
	}

	private text(text: string): void {
		if (this.current?.inChecksum) this.current.checksum += text;
		else if (this.current?.inName) this.current.name = (this.current.name ?? "") + text;
	}

	private close(name: string): void {
		if (this.current && this.depth === this.packageDepth + 1) {
			if (name === "checksum") this.current.inChecksum = false;
			if (name === "name") this.current.inName = false;
		}
		if (this.current && name === "package" && this.depth === this.packageDepth) {
			const pkg = this.current;
			const what = `${this.where} package ${pkg.name ?? this.packages.length}`;
			const size = Number(pkg.size);
			if (pkg.size === undefined || !Number.isSafeInteger(size) || size < 0) permanentFailure(`${what}: no package size`);
			this.packages.push({
				href: safeHref(pkg.location?.href, what, pkg.location?.["xml:base"]),
				checksum: checksumOf({ "@type": pkg.checksumType, "#text": pkg.checksum }, what),
				size,
			});
			this.current = null;
		}
		this.depth--;
	}
}

export function parsePrimary(xml: string, where: string): PrimaryPackage[] {
	const reader = new PrimaryReader(where);
	reader.write(xml);
	return reader.end();
}

/** The packages of a primary.xml file on disk, read in chunks (the event loop runs between them). */
export async function readPrimary(file: string, where: string): Promise<PrimaryPackage[]> {
	const reader = new PrimaryReader(where);
	for await (const chunk of fs.createReadStream(file, { encoding: "utf8", highWaterMark: 256 * 1024 })) reader.write(chunk as string);
	return reader.end();
}

/** The files a .treeinfo's [checksums] section lists ("images/install.img = sha256:…"). */
export function treeinfoChecksums(text: string): { href: string; checksum: string }[] {
	const out: { href: string; checksum: string }[] = [];
	let section = "";
	for (const raw of text.split(/\r?\n/)) {
		const line = raw.trim();
		if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
		const header = /^\[(.+)\]$/.exec(line);
		if (header) {
			section = header[1]!.trim().toLowerCase();
			continue;
		}
		if (section !== "checksums") continue;
		const entry = /^(.+?)\s*=\s*([A-Za-z0-9]+):([0-9A-Fa-f]+)$/.exec(line);
		if (!entry) permanentFailure(`.treeinfo [checksums]: "${line.slice(0, 200)}" is not "path = type:hex"`);
		const where = `.treeinfo [checksums] ${entry[1]!.slice(0, 200)}`;
		out.push({ href: safeHref(entry[1], where), checksum: checksumOf({ "@type": entry[2], "#text": entry[3] }, where) });
	}
	return out;
}
