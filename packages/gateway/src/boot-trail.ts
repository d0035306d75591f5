import type { IncomingMessage, ServerResponse } from "node:http";
import type { BootEventKind, BootEventRecorder } from "@clusterplatform/core";

const SCRIPT = /^\/api\/(mainscripts|subscripts|prebootscripts|postbootscripts)\/\d+(?:\?|$)/;
const KICKSTART = /^\/api\/kickstarts\/\d+(?:\?|$)/;
const ARTIFACT = /^\/api\/artifacts\//;
const REGISTRATION = /^\/api\/localnodes\/?(?:\?|$)/;

/** Which step of a boot a token-less request is, if any. Operators send a token; hosts cannot. */
export function bootStepOf(req: IncomingMessage): BootEventKind | null {
	if (req.headers.authorization) return null;
	const url = req.url ?? "";
	if (req.method === "POST") return REGISTRATION.test(url) ? "registered" : null;
	if (req.method !== "GET" && req.method !== "HEAD") return null;
	if (SCRIPT.test(url)) return "script";
	if (KICKSTART.test(url)) return "kickstart";
	if (ARTIFACT.test(url)) return "artifact";
	return null;
}

/** The client's address as the host knows it (IPv4 without the ::ffff: of a dual-stack socket). */
function clientAddress(req: IncomingMessage): string | null {
	const address = req.socket.remoteAddress ?? null;
	return address?.startsWith("::ffff:") ? address.slice(7) : address;
}

/**
 * Wraps the gateway's request listener: each machine-path request (script, kickstart, artifact,
 * a node registering) becomes a boot event once answered, with its status — the HTTP half of the
 * per-host boot timeline whose DHCP and TFTP half the distributors report.
 */
export function recordBootSteps(recorder: BootEventRecorder, next: (req: IncomingMessage, res: ServerResponse) => void) {
	return (req: IncomingMessage, res: ServerResponse): void => {
		const kind = bootStepOf(req);
		// In a storm the batch fills within the second: the rest cost no listener at all.
		if (kind && recorder.admit()) {
			// Read now: moleculer-web rewrites req.url while routing.
			const url = (req.url ?? "").slice(0, 300);
			res.once("finish", () => {
				recorder.record({ kind, ip: clientAddress(req), mac: null, artifactId: null, detail: `${req.method} ${url} ${res.statusCode}` });
			});
		}
		next(req, res);
	};
}
