import type { IncomingMessage, ServerResponse } from "node:http";
import { RateLimiter, rateKeyOf, type BootEventKind, type BootEventRecorder } from "@clusterplatform/core";
import { machineRequest } from "./machine-path";

/** Steps one client (address, or IPv6 /64) may add to the history: a boot is a dozen, then one a second. */
const STEPS_BURST = 60;
const STEPS_PER_SECOND = 1;

/** Longest URL path kept in an event's detail (artifact keys are the long ones). */
const DETAIL_PATH_MAX = 200;

/** Which step of a boot a token-less request is, if any (its machine-path row). Operators send a token; hosts cannot. */
export function bootStepOf(req: IncomingMessage): { kind: BootEventKind; pathname: string } | null {
	if (req.headers.authorization) return null;
	const machine = machineRequest(req);
	return machine?.route.bootStep ? { kind: machine.route.bootStep, pathname: machine.pathname } : null;
}

/** The client's address as the host knows it (IPv4 without the ::ffff: of a dual-stack socket). */
export function clientAddress(req: IncomingMessage): string | null {
	const address = req.socket.remoteAddress ?? null;
	return address?.startsWith("::ffff:") ? address.slice(7) : address;
}

/** Steps one client may add to the timeline: a boot's worth, then one a second. */
export function stepsPerClient(): RateLimiter {
	return new RateLimiter(STEPS_BURST, STEPS_PER_SECOND);
}

/** A boot the gateway answered from memory (machine-cache.ts) goes on the timeline as the machines service would put it, with the MAC. */
export function recordRepeatedBoot(recorder: BootEventRecorder, perClient: RateLimiter, req: IncomingMessage, mac: string, detail: string): void {
	if (!recorder.admit()) return;
	const ip = clientAddress(req);
	if (perClient.take(rateKeyOf(ip)) > 0) return;
	recorder.record({ kind: "script", ip, mac, artifactId: null, detail: detail.slice(0, 500) });
}

/**
 * Wraps the gateway's request listener (behind the request gate): each machine-path request a host
 * makes (script, kickstart, artifact, a node registering) that is answered 2xx becomes a boot event
 * — the HTTP half of the per-host boot timeline whose DHCP and TFTP half the distributors report.
 * Refusals, 404s and URLs outside the machine path are not history: anyone could write them.
 */
export function recordBootSteps(recorder: BootEventRecorder, next: (req: IncomingMessage, res: ServerResponse) => void) {
	// Anonymous requests must not push real history out of the capped table.
	const perClient = stepsPerClient();
	return (req: IncomingMessage, res: ServerResponse): void => {
		const step = bootStepOf(req);
		// In a storm the batch fills within the second: the rest cost no listener at all.
		if (step && recorder.admit()) {
			// The path only (no query), read now: moleculer-web rewrites req.url while routing.
			const detailPath = step.pathname.slice(0, DETAIL_PATH_MAX);
			res.once("finish", () => {
				if (res.statusCode < 200 || res.statusCode > 299 || perClient.take(rateKeyOf(clientAddress(req))) > 0) return;
				recorder.record({ kind: step.kind, ip: clientAddress(req), mac: null, artifactId: null, detail: `${req.method} ${detailPath} ${res.statusCode}` });
			});
		}
		next(req, res);
	};
}
