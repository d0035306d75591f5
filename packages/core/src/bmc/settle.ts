import type { PowerState } from "./types";

const POLL_INTERVAL_MS = 500;

/**
 * The state a BMC reports after an action, followed until it reaches the target or `until` passes:
 * many BMCs report the old state for a moment after accepting a command. The last report is the
 * answer either way; a BMC that never gets there is not an error here (the caller sees the state).
 */
export async function pollPowerState(read: () => Promise<PowerState>, target: PowerState, until: number): Promise<PowerState> {
	for (;;) {
		const state = await read();
		if (state === target || Date.now() + POLL_INTERVAL_MS > until) return state;
		await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
	}
}
