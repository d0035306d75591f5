import { Errors } from "moleculer";

/**
 * One error model. Every error a client can cause is a MoleculerClientError, which the gateway
 * answers as JSON {name, message, code, type, data}; `data` names the offending fields.
 */
export interface FieldProblem {
	field: string;
	message: string;
	type?: string;
}

export class InvalidInputError extends Errors.MoleculerClientError {
	constructor(problems: FieldProblem[]) {
		super(problems.map((p) => `${p.field}: ${p.message}`).join("; "), 422, "VALIDATION_ERROR", problems);
		this.name = "ValidationError";
	}
}

/** Throw a 422 that names one field and the reason. */
export function invalid(field: string, message: string): never {
	throw new InvalidInputError([{ field, message }]);
}

export class NotFoundError extends Errors.MoleculerClientError {
	constructor(entity: string, id: unknown) {
		super(`${entity} ${String(id)} not found`, 404, "NOT_FOUND", { entity, id });
		this.name = "NotFoundError";
	}
}

export class ConflictError extends Errors.MoleculerClientError {
	constructor(message: string, data?: unknown) {
		super(message, 409, "CONFLICT", data);
		this.name = "ConflictError";
	}
}

/** A feature this deployment cannot provide (e.g. no toolchain for it); said plainly, never faked. */
export class UnavailableError extends Errors.MoleculerError {
	constructor(message: string, data?: unknown) {
		super(message, 503, "UNAVAILABLE", data);
		this.name = "UnavailableError";
	}
}

/** A misconfigured environment; the launcher prints the message as one line and exits. */
export class ConfigError extends Error {
	override name = "ConfigError";
}

/** A system binary the running services need is not installed. */
export class MissingBinaryError extends ConfigError {
	constructor(binary: string, debianPackage: string) {
		super(`${binary} not found: install it with \`apt-get install ${debianPackage}\``);
	}
}
