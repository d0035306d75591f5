import { useEffect, useState } from "preact/hooks";
import { ApiError, api } from "../api";
import { ErrorBox, Section, When } from "../components";
import type { HostSummary } from "@clusterplatform/boots";
import type { BootEvent } from "@clusterplatform/core";

const REFRESH_MS = 5000;

function Timeline({ host }: { host: string }) {
	const [events, setEvents] = useState<BootEvent[] | null>(null);
	const [error, setError] = useState<unknown>(null);
	useEffect(() => {
		const load = () =>
			api<{ events: BootEvent[] }>(`/boots/hosts/${encodeURIComponent(host)}`).then(
				(timeline) => setEvents(timeline.events),
				setError,
			);
		void load();
		const timer = setInterval(load, REFRESH_MS);
		return () => clearInterval(timer);
	}, [host]);
	return (
		<div class="editor-panel" id="boot-timeline">
			<h3>Boot timeline of {host}</h3>
			<ErrorBox error={error} />
			<table>
				<thead>
					<tr>
						<th>when</th>
						<th>step</th>
						<th>seen by</th>
						<th>detail</th>
					</tr>
				</thead>
				<tbody>
					{(events ?? []).map((event, i) => (
						<tr key={i}>
							<td>
								<When date={event.at} />
							</td>
							<td>
								<span class="badge">{event.kind}</span>
							</td>
							<td>{event.artifactId ? `distributor of ${event.artifactId}` : "gateway"}</td>
							<td>
								<code>{event.detail}</code>
							</td>
						</tr>
					))}
				</tbody>
			</table>
		</div>
	);
}

/** GET /api/boots/hosts: what each host asked for while booting (DHCP, TFTP, scripts, registration). */
export function BootsView() {
	const [hosts, setHosts] = useState<HostSummary[] | null>(null);
	const [error, setError] = useState<unknown>(null);
	const [selected, setSelected] = useState<string | null>(null);
	useEffect(() => {
		let timer: ReturnType<typeof setInterval> | undefined;
		const load = () =>
			api<HostSummary[]>("/boots/hosts").then(setHosts, (err) => {
				setError(err);
				// No boots service: nothing will appear by polling.
				if (err instanceof ApiError && err.status === 404) clearInterval(timer);
			});
		void load();
		timer = setInterval(load, REFRESH_MS);
		return () => clearInterval(timer);
	}, []);
	const missing = error instanceof ApiError && error.status === 404;
	return (
		<Section title="Boots — what each host fetched while booting">
			{missing ? (
				<p class="muted" id="boots-unavailable">
					This provisioner offers no boot timeline (<code>GET /api/boots/hosts</code> answered 404: the boots service is not running).
				</p>
			) : (
				<>
					<p class="muted">
						Distributors report proxy-DHCP answers and TFTP transfers; the gateway reports the token-less requests of booting hosts (scripts, kickstarts,
						artifacts, registration).
					</p>
					<ErrorBox error={error} />
					<table>
						<thead>
							<tr>
								<th>host</th>
								<th>MACs</th>
								<th>steps reached</th>
								<th>last step</th>
								<th>last seen</th>
								<th />
							</tr>
						</thead>
						<tbody>
							{(hosts ?? []).map((host) => (
								<tr key={host.host} class={selected === host.host ? "selected" : ""} data-host={host.host}>
									<td>
										<code>{host.host}</code>
									</td>
									<td>
										<code>{host.macs.join(" ")}</code>
									</td>
									<td>{host.steps.join(" → ")}</td>
									<td>
										{host.last.kind} <span class="muted">{host.last.detail}</span>
									</td>
									<td>
										<When date={host.lastSeen} />
									</td>
									<td class="row-actions">
										<button onClick={() => setSelected(host.host)}>Timeline</button>
									</td>
								</tr>
							))}
						</tbody>
					</table>
					{hosts?.length === 0 && <p class="muted">No host has booted yet.</p>}
					{selected && <Timeline key={selected} host={selected} />}
				</>
			)}
		</Section>
	);
}
