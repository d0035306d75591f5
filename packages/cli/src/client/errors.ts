/**
 * Exit codes scripts can rely on. `node run` is the exception on success: it exits with the
 * remote script's own code once the API has answered.
 */
export const EXIT = {
	ok: 0,
	/** The API or server failed (5xx), or a build finished as failed. */
	failed: 1,
	/** The command line or the local configuration is wrong (nothing was sent). */
	usage: 2,
	/** The resource or row does not exist (404). */
	notFound: 3,
	/** No token, a wrong token (401), or a read-only token for a change (403). */
	auth: 4,
	/** A bounded wait ran out: --wait --timeout, the request itself, or a script's timeout (504). */
	timeout: 5,
	/** The gateway could not be reached at all (connection refused, unknown host). */
	unreachable: 6,
	/** The API refused the input (400, 409, 413, 422); the fields and reasons are printed. */
	refused: 7,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0  success (node run: the script's own exit code, 128+N when a signal N ended it)
  1  the API or a server failed (5xx), or a build finished as failed
  2  usage or configuration error (bad arguments, unreadable file, no such resource)
  3  not found (404)
  4  authentication: missing or wrong token (401), read-only token (403)
  5  timeout: --wait ran out of --timeout, or the script/request timed out (504)
  6  the gateway is unreachable
  7  the API refused the input (400/409/413/422): each field and reason is printed`;

/** A failure the CLI reports as one message and one exit code, without a stack. */
export class CliError extends Error {
	constructor(
		message: string,
		readonly exitCode: number,
		/** Field problems named by the API (422), printed one per line. */
		readonly problems: { field: string; message: string }[] = [],
	) {
		super(message);
		this.name = "CliError";
	}
}

export function usageError(message: string): never {
	throw new CliError(message, EXIT.usage);
}

/** The exit code an HTTP status maps to. */
export function exitCodeOfStatus(status: number): number {
	if (status === 404) return EXIT.notFound;
	if (status === 401 || status === 403) return EXIT.auth;
	if (status === 504 || status === 408) return EXIT.timeout;
	if (status === 400 || status === 409 || status === 413 || status === 422) return EXIT.refused;
	return EXIT.failed;
}
