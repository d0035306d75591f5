import type { Socket } from "node:net";

interface Answer {
	code: number;
	status: string;
	name: string;
	type: string;
	message: string;
}

function answerFor(err: NodeJS.ErrnoException): Answer {
	if (err.code === "HPE_HEADER_OVERFLOW") {
		return { code: 431, status: "Request Header Fields Too Large", name: "RequestHeaderFieldsTooLargeError", type: "REQUEST_HEADER_FIELDS_TOO_LARGE", message: "the request line and headers are too large (at most 16 KiB): send long values in a JSON body" };
	}
	if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
		return { code: 408, status: "Request Timeout", name: "RequestTimeoutError", type: "REQUEST_TIMEOUT", message: "the request was not received in time (HEADERS_TIMEOUT / REQUEST_TIMEOUT)" };
	}
	return { code: 400, status: "Bad Request", name: "BadRequestError", type: "BAD_REQUEST", message: "malformed HTTP request" };
}

/**
 * Requests Node's HTTP parser rejects before any route sees them (an oversized request line or
 * headers, malformed HTTP) and requests cut for arriving too slowly get the same JSON error shape
 * as every other 4xx, not a bare status line. The connection always goes.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket & { _httpMessage?: { headersSent?: boolean } }): void {
	// A response already under way on this socket (e.g. a request whose body never finished) cannot take a second one.
	if (err.code === "ECONNRESET" || !socket.writable || socket._httpMessage?.headersSent) {
		socket.destroy();
		return;
	}
	const answer = answerFor(err);
	const body = JSON.stringify({ name: answer.name, message: answer.message, code: answer.code, type: answer.type });
	socket.end(`HTTP/1.1 ${answer.code} ${answer.status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
	// end() waits for the peer; a client that keeps dribbling must not hold the socket.
	setTimeout(() => socket.destroy(), 1000).unref();
}
