import { XMLParser } from "fast-xml-parser";
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
	isArray: (name) => name === "data" || name === "package",
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

function checksumOf(node: any, where: string): string {
	const type = CHECKSUM_TYPES[String(node?.["@type"] ?? "").toLowerCase()];
	const value = String(node?.["#text"] ?? "").trim().toLowerCase();
	if (!type) permanentFailure(`${where}: checksum type "${String(node?.["@type"])}" is not one of ${Object.keys(CHECKSUM_TYPES).join(", ")}`);
	if (!/^[0-9a-f]{32,128}$/.test(value)) permanentFailure(`${where}: checksum "${value.slice(0, 200)}" is not a hex digest`);
	return `${type}:${value}`;
}

function parse(xml: string, what: string): any {
	try {
		return parser.parse(xml);
	} catch (err) {
		return permanentFailure(`${what}: not valid XML: ${(err as Error).message.slice(0, 200)}`);
	}
}

export function parseRepomd(xml: string): RepomdData[] {
	const repomd = parse(xml, "repodata/repomd.xml").repomd;
	if (!repomd || !Array.isArray(repomd.data)) permanentFailure("repodata/repomd.xml: no <repomd> with <data> entries");
	return repomd.data.map((data: any, index: number) => {
		const where = `repodata/repomd.xml <data type="${String(data?.["@type"] ?? index)}">`;
		const location = data?.location;
		const size = Number(data?.size);
		return {
			type: String(data?.["@type"] ?? ""),
			href: safeHref(location?.["@href"], where, location?.["@xml:base"]),
			checksum: checksumOf(data?.checksum, where),
			size: Number.isSafeInteger(size) && size >= 0 ? size : null,
		};
	});
}

export function parsePrimary(xml: string, where: string): PrimaryPackage[] {
	const metadata = parse(xml, where).metadata;
	if (!metadata) permanentFailure(`${where}: no <metadata> element`);
	return (metadata.package ?? []).map((pkg: any, index: number) => {
		const what = `${where} package ${String(pkg?.name ?? index)}`;
		const size = Number(pkg?.size?.["@package"]);
		if (!Number.isSafeInteger(size) || size < 0) permanentFailure(`${what}: no package size`);
		return { href: safeHref(pkg?.location?.["@href"], what, pkg?.location?.["@xml:base"]), checksum: checksumOf(pkg?.checksum, what), size };
	});
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
