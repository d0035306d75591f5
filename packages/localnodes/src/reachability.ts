/** Sites, and re-registered nodes, remembered as due for the next pass; beyond these the schedule catches them up. */
export const DUE_SITES_MAX = 1024;
export const DUE_NODES_MAX = 8192;

/** What the passes did, for tests and the bench: work per registration stays bounded. */
export interface ReachabilityStats {
	passes: number;
	reachCalls: number;
	nodesChecked: number;
	rowsRead: number;
	largestPass: number;
}

/**
 * The localnodes service's reachability schedule, in memory: which sites (and re-registered nodes)
 * are due, the pass in flight, its timers, and where the next scheduled pass goes on in the list of
 * online sites. Bounded whatever the fleet's size; the service does the I/O.
 */
export class Reachability {
	due = new Map<string, Set<number>>();
	dueNodes = 0;
	/** The coalescing timer of the next "due" pass. */
	timer: NodeJS.Timeout | null = null;
	/** The pass in flight: one at a time. */
	run: Promise<void> | null = null;
	stopping = false;
	/** Offset of the next page of online sites a scheduled pass takes: every site gets its turn. */
	sitesOffset = 0;
	readonly stats: ReachabilityStats = { passes: 0, reachCalls: 0, nodesChecked: 0, rowsRead: 0, largestPass: 0 };

	/** Marks a site (and a node of it) due: O(1), and nothing beyond DUE_SITES_MAX/DUE_NODES_MAX is kept. */
	markDue(artifactId: string, id?: number): void {
		let ids = this.due.get(artifactId);
		if (!ids) {
			if (this.due.size >= DUE_SITES_MAX) return;
			ids = new Set<number>();
			this.due.set(artifactId, ids);
		}
		if (id !== undefined && this.dueNodes < DUE_NODES_MAX && !ids.has(id)) {
			ids.add(id);
			this.dueNodes++;
		}
	}

	/** What is due, handed to a pass; marks made meanwhile go to the next one. */
	takeDue(): Map<string, Set<number>> {
		const due = this.due;
		this.due = new Map();
		this.dueNodes = 0;
		return due;
	}

	/** After a page of `taken` online sites (of at most `pageSize`): the next pass's offset, from the start after the last page. */
	advanceSites(taken: number, pageSize: number): void {
		this.sitesOffset = taken < pageSize ? 0 : this.sitesOffset + taken;
	}
}
