import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, onUnauthorized, storeToken, storedToken } from "./api";
import { ErrorBox } from "./components";
import { BootsView } from "./views/boots";
import { BuildsView } from "./views/builds";
import { DeployView } from "./views/deploy";
import { DistributorsView } from "./views/distributors";
import { LocalnodesView } from "./views/localnodes";
import { MachinesView } from "./views/machines";
import { RegistriesView } from "./views/registries";
import "./style.css";

const BASE = "/console/";

/** Client-side routes below /console/ (the gateway answers index.html for each). */
const ROUTES = [
	{ path: "", title: "Deploy", view: DeployView },
	{ path: "registries", title: "Registries", view: RegistriesView },
	{ path: "builds", title: "Builds", view: BuildsView },
	{ path: "distributors", title: "Distributors", view: DistributorsView },
	{ path: "machines", title: "Machines", view: MachinesView },
	{ path: "localnodes", title: "Localnodes", view: LocalnodesView },
	{ path: "boots", title: "Boots", view: BootsView },
];

function currentRoute(): string {
	return location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length).split("/")[0]! : "";
}

function TokenPrompt({ reason, onAccepted }: { reason: string | null; onAccepted: () => void }) {
	const [token, setToken] = useState("");
	const [error, setError] = useState<unknown>(null);
	const submit = async (event: Event) => {
		event.preventDefault();
		setError(null);
		storeToken(token.trim());
		try {
			// The API document needs a token (unless AUTH=off): it tells whether the API takes this one.
			await api("/openapi.json");
			onAccepted();
		} catch (err) {
			setError(err);
		}
	};
	return (
		<form class="card token" id="token-form" onSubmit={submit}>
			<h2>API token</h2>
			{reason && (
				<p class="error" id="token-reason">
					{reason}
				</p>
			)}
			<p class="muted">
				Paste an API token: the one the first <code>clusterplatform start</code> printed, or a new one from <code>clusterplatform token create</code>. It stays in this tab only
				(sessionStorage) and goes to this provisioner's /api as <code>Authorization: Bearer</code>.
			</p>
			<label for="token">Token</label>
			<input id="token" type="password" autocomplete="off" value={token} onInput={(e) => setToken(e.currentTarget.value)} required />
			<div class="actions">
				<button type="submit" id="token-submit">
					Use this token
				</button>
			</div>
			{/* A 401 is already said above, as the reason. */}
			<ErrorBox error={error instanceof ApiError && error.status === 401 ? null : error} />
		</form>
	);
}

type Access = "checking" | "prompt" | "in";

function App() {
	const [route, setRoute] = useState(currentRoute());
	const [access, setAccess] = useState<Access>(storedToken() ? "in" : "checking");
	const [reason, setReason] = useState<string | null>(null);

	useEffect(() => {
		onUnauthorized((why) => {
			setReason(why);
			setAccess("prompt");
		});
		const back = () => setRoute(currentRoute());
		addEventListener("popstate", back);
		if (access === "checking") {
			// A provisioner started with AUTH=off needs no token: find out without sending one.
			api("/openapi.json", { anonymous: true }).then(
				() => setAccess("in"),
				() => setAccess("prompt"),
			);
		}
		return () => removeEventListener("popstate", back);
	}, []);

	const go = (path: string) => (event: MouseEvent) => {
		event.preventDefault();
		history.pushState(null, "", BASE + path);
		setRoute(path);
	};
	const forget = () => {
		storeToken(null);
		setReason(null);
		setAccess("prompt");
	};
	const View = (ROUTES.find((r) => r.path === route) ?? ROUTES[0]!).view;
	return (
		<>
			<header>
				<h1>Cluster Platform Provisioner</h1>
				<nav>
					{ROUTES.map((r) => (
						<a key={r.path} href={BASE + r.path} class={r.path === route ? "active" : ""} onClick={go(r.path)}>
							{r.title}
						</a>
					))}
				</nav>
				{access === "in" && storedToken() && (
					<button class="secondary" id="forget-token" onClick={forget}>
						Forget token
					</button>
				)}
			</header>
			<main>
				{access === "checking" && <p class="muted">Connecting…</p>}
				{access === "prompt" && (
					<TokenPrompt
						reason={reason}
						onAccepted={() => {
							setReason(null);
							setAccess("in");
						}}
					/>
				)}
				{access === "in" && <View key={route} />}
			</main>
		</>
	);
}

render(<App />, document.getElementById("app")!);
