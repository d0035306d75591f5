import { assertKey, permanentFailure, type ObjectStore } from "@clusterplatform/core";

/**
 * Where a mirror lives in the object store: the repository tree under `mirrors/<id>/repo/` (what
 * clients fetch) and the manifest next to it, outside the tree.
 */
export function mirrorPrefix(id: number): string {
	return `mirrors/${id}/`;
}

export function manifestKey(id: number): string {
	return `mirrors/${id}/manifest.json`;
}

/** The store key of a file of the mirrored tree; a path the store cannot hold fails the sync, naming it. */
export function repoKey(id: number, path: string): string {
	try {
		return assertKey(`mirrors/${id}/repo/${path}`);
	} catch {
		return permanentFailure(`${path}: this file name cannot be stored (letters, digits and . _ - + ~ only)`);
	}
}

/** The base URL a client (dnf's baseurl, a kickstart's `url --url=`) takes: the tree, with "/". */
export function mirrorUrl(store: ObjectStore, id: number): string {
	return `${store.url(`mirrors/${id}/repo`)}/`;
}

/**
 * Files published after everything else, so a client never reads an index that names files not
 * there yet: yum/dnf's repomd.xml, Debian's Release files, an install tree's .treeinfo.
 */
export function publishedLast(path: string): boolean {
	return /(^|\/)repodata\/repomd\.xml(\.asc|\.key)?$/.test(path) || /(^|\/)dists\/[^/]+\/(InRelease|Release|Release\.gpg)$/.test(path) || /(^|\/)\.treeinfo$/.test(path);
}
