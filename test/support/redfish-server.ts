import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

/**
 * A STAND-IN for a Redfish BMC — not a BMC, and not an emulator of any vendor's: Debian ships no
 * Redfish emulator, so this test server speaks the DMTF Redfish schema for exactly the calls the
 * client makes (service root, SessionService sessions, the Systems collection, one
 * ComputerSystem with its Reset action and Boot override), and enforces what a strict BMC does:
 * X-Auth-Token sessions, ETags (428 without If-Match, 412 on a stale one), AllowableValues, a
 * redirect. HTTPS on 127.0.0.1 with a self-signed certificate made by `openssl req`.
 */
export interface RedfishStandIn {
	address: string;
	port: number;
	user: string;
	password: string;
	/** The certificate's SHA-256 as openssl prints it ("AB:CD:…"), computed by openssl, not by us. */
	certificateSha256: string;
	/** The certificate (PEM), for a test's own direct requests. */
	certificatePem: string;
	state: StandInState;
	/** Another client changes the system between the client's next read and its PATCH (ETag bumped). */
	interveneBeforeNextPatch(): void;
	stop(): Promise<void>;
}

export interface StandInState {
	powerState: "On" | "Off";
	boot: { BootSourceOverrideTarget: string; BootSourceOverrideEnabled: string };
	etag: number;
	/** Every ResetType accepted, in order. */
	resets: string[];
	/** Every PATCH that reached the system: the If-Match it carried, the ETag current then, the answer. */
	patches: { ifMatch: string | undefined; current: string; status: number }[];
	/** Every request, in order (method, path, status). */
	requests: { method: string; path: string; status: number }[];
	sessionsCreated: number;
	sessionsDeleted: number;
	activeSessions: Map<string, string>;
	redirectsServed: number;
}

export interface StandInOptions {
	user?: string;
	password?: string;
	resetTypes?: string[];
	bootTargets?: string[];
	powerState?: "On" | "Off";
	/** Where GET /redfish/v1/Systems is redirected: the same host (default) or another one. */
	redirectSystems?: "same-host" | "other-host";
}

const SYSTEM = "/redfish/v1/Systems/1";
const RESET = `${SYSTEM}/Actions/ComputerSystem.Reset`;
const SESSIONS = "/redfish/v1/SessionService/Sessions";
const TURNS_ON = new Set(["On", "ForceOn", "ForceRestart", "PowerCycle", "GracefulRestart"]);
const RESTARTS = new Set(["ForceRestart", "PowerCycle", "GracefulRestart"]);
/** A host outside the test that the stand-in may name but nothing may contact (RFC 2606). */
export const OTHER_HOST = "other-bmc.example";

export async function startRedfishStandIn(options: StandInOptions = {}): Promise<RedfishStandIn> {
	const { key, cert, fingerprint } = await selfSignedCertificate();
	const user = options.user ?? "root";
	const password = options.password ?? `pw-${crypto.randomBytes(6).toString("hex")}`;
	const resetTypes = options.resetTypes ?? ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle", "Nmi"];
	const bootTargets = options.bootTargets ?? ["None", "Pxe", "Hdd", "Cd", "BiosSetup"];
	const state: StandInState = {
		powerState: options.powerState ?? "Off",
		boot: { BootSourceOverrideTarget: "None", BootSourceOverrideEnabled: "Disabled" },
		etag: 1,
		resets: [],
		patches: [],
		requests: [],
		sessionsCreated: 0,
		sessionsDeleted: 0,
		activeSessions: new Map(),
		redirectsServed: 0,
	};
	let intervene = false;
	const etag = () => `W/"${state.etag}"`;
	let port = 0;

	const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
		const url = new URL(req.url ?? "/", "https://stand-in");
		const route = `${req.method} ${url.pathname}`;
		const body = await readJson(req);
		const send = (status: number, payload?: unknown, headers: Record<string, string> = {}) => {
			state.requests.push({ method: req.method ?? "", path: url.pathname, status });
			res.writeHead(status, { ...(payload === undefined ? {} : { "content-type": "application/json" }), "odata-version": "4.0", ...headers });
			res.end(payload === undefined ? undefined : JSON.stringify(payload));
		};

		if (route === "GET /redfish/v1") return send(301, undefined, { location: "/redfish/v1/" });
		if (route === "GET /redfish/v1/") return send(200, serviceRoot());
		if (route === `POST ${SESSIONS}`) {
			if (body?.UserName !== user || body?.Password !== password) return send(401, redfishError("Base.1.8.NoValidSession", "Invalid user name or password."));
			const id = String(++state.sessionsCreated);
			const token = crypto.randomBytes(16).toString("hex");
			state.activeSessions.set(token, id);
			return send(201, { "@odata.id": `${SESSIONS}/${id}`, "@odata.type": "#Session.v1_3_0.Session", Id: id, Name: "User Session", UserName: user }, { "x-auth-token": token, location: `${SESSIONS}/${id}` });
		}

		const token = req.headers["x-auth-token"];
		const session = typeof token === "string" ? state.activeSessions.get(token) : undefined;
		if (!session) return send(401, redfishError("Base.1.8.NoValidSession", "There is no valid session established with the implementation."));

		if (req.method === "DELETE" && url.pathname === `${SESSIONS}/${session}`) {
			state.activeSessions.delete(token as string);
			state.sessionsDeleted++;
			return send(204);
		}
		if (route === "GET /redfish/v1/Systems") {
			state.redirectsServed++;
			const target = (options.redirectSystems ?? "same-host") === "same-host" ? "/redfish/v1/Systems/" : `https://${OTHER_HOST}:${port}/redfish/v1/Systems/`;
			return send(308, undefined, { location: target });
		}
		if (route === "GET /redfish/v1/Systems/") {
			return send(200, { "@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection", Name: "Computer System Collection", Members: [{ "@odata.id": SYSTEM }], "Members@odata.count": 1 });
		}
		if (route === `GET ${SYSTEM}`) return send(200, computerSystem(), { etag: etag() });
		if (route === `PATCH ${SYSTEM}`) {
			if (intervene) {
				intervene = false;
				state.etag++;
			}
			const ifMatch = typeof req.headers["if-match"] === "string" ? req.headers["if-match"] : undefined;
			const status = patchStatus(ifMatch, body);
			state.patches.push({ ifMatch, current: etag(), status: status.code });
			if (status.code !== 204) return send(status.code, status.error);
			const boot = body!.Boot as Record<string, string>;
			state.boot = { ...state.boot, ...boot };
			state.etag++;
			return send(204, undefined, { etag: etag() });
		}
		if (route === `POST ${RESET}`) {
			const type = body?.ResetType;
			if (typeof type !== "string" || !resetTypes.includes(type)) {
				return send(400, redfishError("Base.1.8.ActionParameterValueNotInList", `The value ${JSON.stringify(type)} for the parameter ResetType is not in the list of acceptable values.`));
			}
			if (RESTARTS.has(type) && state.powerState === "Off") return send(409, redfishError("Base.1.8.ResourceInStandby", "The system is powered off; it cannot be restarted."));
			state.resets.push(type);
			state.powerState = TURNS_ON.has(type) ? "On" : "Off";
			state.etag++;
			return send(204);
		}
		return send(404, redfishError("Base.1.8.ResourceMissingAtURI", `The resource at the URI ${url.pathname} was not found.`));
	};

	const patchStatus = (ifMatch: string | undefined, body: Record<string, unknown> | undefined): { code: number; error?: unknown } => {
		if (!ifMatch) return { code: 428, error: redfishError("Base.1.8.PreconditionRequired", "A precondition header (If-Match) is required.") };
		if (ifMatch !== etag()) return { code: 412, error: redfishError("Base.1.8.PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.") };
		const boot = body?.Boot as Record<string, unknown> | undefined;
		if (!boot || Object.keys(body!).some((k) => k !== "Boot")) return { code: 400, error: redfishError("Base.1.8.PropertyUnknown", "Only Boot may be changed here.") };
		for (const [property, value] of Object.entries(boot)) {
			const allowed = property === "BootSourceOverrideTarget" ? bootTargets : property === "BootSourceOverrideEnabled" ? ["Disabled", "Once", "Continuous"] : null;
			if (!allowed) return { code: 400, error: redfishError("Base.1.8.PropertyUnknown", `The property ${property} is not in the list of valid properties.`) };
			if (typeof value !== "string" || !allowed.includes(value)) {
				return { code: 400, error: redfishError("Base.1.8.PropertyValueNotInList", `The value ${JSON.stringify(value)} for the property ${property} is not in the list of acceptable values.`) };
			}
		}
		return { code: 204 };
	};

	const computerSystem = () => ({
		"@odata.id": SYSTEM,
		"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
		"@odata.etag": etag(),
		Id: "1",
		Name: "Stand-in system",
		SystemType: "Physical",
		PowerState: state.powerState,
		Boot: { ...state.boot, "BootSourceOverrideTarget@Redfish.AllowableValues": bootTargets, BootSourceOverrideMode: "UEFI" },
		Actions: { "#ComputerSystem.Reset": { target: RESET, "ResetType@Redfish.AllowableValues": resetTypes } },
	});

	const server = https.createServer({ key, cert }, (req, res) => {
		handle(req, res).catch(() => {
			res.writeHead(500);
			res.end();
		});
	});
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	port = (server.address() as net.AddressInfo).port;
	return {
		address: "127.0.0.1",
		port,
		user,
		password,
		certificateSha256: fingerprint,
		certificatePem: cert,
		state,
		interveneBeforeNextPatch: () => {
			intervene = true;
		},
		stop: () =>
			new Promise<void>((resolve) => {
				server.closeAllConnections();
				server.close(() => resolve());
			}),
	};
}

function serviceRoot() {
	return {
		"@odata.id": "/redfish/v1/",
		"@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
		Id: "RootService",
		Name: "Redfish stand-in (test server)",
		RedfishVersion: "1.15.0",
		Systems: { "@odata.id": "/redfish/v1/Systems" },
		SessionService: { "@odata.id": "/redfish/v1/SessionService" },
		Links: { Sessions: { "@odata.id": SESSIONS } },
	};
}

function redfishError(messageId: string, message: string) {
	return { error: { code: messageId, message, "@Message.ExtendedInfo": [{ "@odata.type": "#Message.v1_1_1.Message", MessageId: messageId, Message: message, Severity: "Warning" }] } };
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | undefined> {
	const chunks: Buffer[] = [];
	let size = 0;
	for await (const chunk of req) {
		size += (chunk as Buffer).length;
		if (size > 64 * 1024) throw new Error("body too large");
		chunks.push(chunk as Buffer);
	}
	if (size === 0) return undefined;
	try {
		return JSON.parse(Buffer.concat(chunks).toString("utf8"));
	} catch {
		return undefined;
	}
}

function openssl(args: readonly string[]): Promise<string> {
	return new Promise((resolve, reject) => {
		execFile("openssl", args, { timeout: 30_000, encoding: "utf8" }, (error, stdout, stderr) => (error ? reject(new Error(`openssl ${args[0]}: ${stderr || error.message}`)) : resolve(stdout)));
	});
}

/** A fresh self-signed certificate for 127.0.0.1 (what BMCs ship), and its SHA-256 fingerprint as openssl computes it. */
export async function selfSignedCertificate(): Promise<{ key: string; cert: string; fingerprint: string }> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "redfish-cert-"));
	try {
		const keyFile = path.join(dir, "key.pem");
		const certFile = path.join(dir, "cert.pem");
		await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "2", "-subj", "/CN=redfish-stand-in", "-addext", "subjectAltName=IP:127.0.0.1"]);
		const printed = await openssl(["x509", "-in", certFile, "-noout", "-fingerprint", "-sha256"]);
		const fingerprint = /Fingerprint=([0-9A-F:]+)/i.exec(printed)?.[1];
		if (!fingerprint) throw new Error(`no fingerprint in openssl's answer: ${printed}`);
		return { key: fs.readFileSync(keyFile, "utf8"), cert: fs.readFileSync(certFile, "utf8"), fingerprint: fingerprint.toUpperCase() };
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

/** A TCP server on 127.0.0.1 that accepts connections and never says a word (a hung BMC). */
export async function startSilentServer(): Promise<{ port: number; connections(): number; stop(): Promise<void> }> {
	const sockets = new Set<net.Socket>();
	let accepted = 0;
	const server = net.createServer((socket) => {
		accepted++;
		sockets.add(socket);
		socket.on("error", () => undefined);
		socket.once("close", () => sockets.delete(socket));
	});
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	return {
		port: (server.address() as net.AddressInfo).port,
		connections: () => accepted,
		stop: () =>
			new Promise<void>((resolve) => {
				for (const socket of sockets) socket.destroy();
				server.close(() => resolve());
			}),
	};
}
