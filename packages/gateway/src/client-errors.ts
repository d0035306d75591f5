import type { Socket } from "node:net";

/**
 * Requests Node's HTTP parser rejects before any route sees them (an oversized request line or
 * headers, malformed HTTP) get the same JSON error shape as every other 4xx, not a bare status line.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
	if (err.code === "ECONNRESET" || !socket.writable) {
		socket.destroy();
		return;
	}
	const tooLarge = err.code === "HPE_HEADER_OVERFLOW";
	const code = tooLarge ? 431 : 400;
	const body = JSON.stringify({
		name: tooLarge ? "RequestHeaderFieldsTooLargeError" : "BadRequestError",
		message: tooLarge ? "the request line and headers are too large (at most 16 KiB): send long values in a JSON body" : "malformed HTTP request",
		code,
		type: tooLarge ? "REQUEST_HEADER_FIELDS_TOO_LARGE" : "BAD_REQUEST",
	});
	socket.end(
		`HTTP/1.1 ${code} ${tooLarge ? "Request Header Fields Too Large" : "Bad Request"}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
	);
}
