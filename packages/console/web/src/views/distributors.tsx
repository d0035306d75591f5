import { useState } from "preact/hooks";
import { api } from "../api";
import { ErrorBox, Section, When, attempt } from "../components";
import { useRows } from "../hooks";
import type { DistributorRow as Distributor } from "@clusterplatform/distributor";

const OPTIONAL_FIELDS = ["ipxePxeUefiIa32Url", "ipxePxeUefiArm64Url", "scriptUrl"];

/** PUT /api/distributors/:id: what the distributor's dnsmasq answers with. */
function SettingsForm({ row, onDone }: { row: Distributor; onDone: () => void }) {
	const [values, setValues] = useState({
		device: row.device ?? "",
		range: row.range ?? "",
		ipxePxeBiosUrl: row.ipxePxeBiosUrl ?? "",
		ipxePxeUefiUrl: row.ipxePxeUefiUrl ?? "",
		ipxePxeUefiIa32Url: row.ipxePxeUefiIa32Url ?? "",
		ipxePxeUefiArm64Url: row.ipxePxeUefiArm64Url ?? "",
		scriptUrl: row.scriptUrl ?? "",
	});
	const [error, setError] = useState<unknown>(null);
	const field = (name: keyof typeof values, label: string) => (
		<>
			<label for={`distributor-${name}`}>{label}</label>
			<input id={`distributor-${name}`} value={values[name]} onInput={(e) => setValues({ ...values, [name]: e.currentTarget.value })} />
		</>
	);
	const save = () =>
		attempt(setError, async () => {
			// Optional fields left empty are left out (the API takes them away again).
			const json = Object.fromEntries(Object.entries(values).filter(([name, value]) => value !== "" || !OPTIONAL_FIELDS.includes(name)));
			await api(`/distributors/${row.id}`, { method: "PUT", json });
			onDone();
		});
	return (
		<div class="editor-panel">
			<h3>Settings of distributor #{row.id}</h3>
			{field("device", "LAN interface (device)")}
			{field("range", "LAN address (proxy-DHCP range)")}
			{field("ipxePxeBiosUrl", "BIOS iPXE URL (undionly.kpxe)")}
			{field("ipxePxeUefiUrl", "UEFI iPXE URL (ipxe.efi)")}
			{field("ipxePxeUefiIa32Url", "32-bit UEFI iPXE URL (bin-i386-efi ipxe.efi, optional)")}
			{field("ipxePxeUefiArm64Url", "ARM64 UEFI iPXE URL (bin-arm64-efi ipxe.efi, optional)")}
			{field("scriptUrl", "Script URL for hosts already in iPXE (optional)")}
			<div class="actions">
				<button onClick={save}>Update</button>
				<button class="secondary" onClick={onDone}>
					Cancel
				</button>
			</div>
			<ErrorBox error={error} />
		</div>
	);
}

export function DistributorsView() {
	const { rows, error, reload } = useRows<Distributor>("distributors", 3000);
	const [editing, setEditing] = useState<Distributor | null>(null);
	const [actionError, setActionError] = useState<unknown>(null);
	const setStatus = (row: Distributor, on: boolean) =>
		attempt(setActionError, async () => {
			await api(`/distributors/${row.id}/status`, { method: "PUT", json: { on } });
			await reload();
		});
	return (
		<Section title="Distributors — PXE on each site's LAN">
			<p class="muted">
				A distributor appears here when it connects (<code>clusterplatform distributor</code> on the site's LAN). Commands go to that distributor only; an
				offline one answers 503.
			</p>
			{editing && (
				<SettingsForm
					key={editing.id}
					row={editing}
					onDone={() => {
						setEditing(null);
						setActionError(null);
						void reload();
					}}
				/>
			)}
			<ErrorBox error={error ?? actionError} />
			<table>
				<thead>
					<tr>
						<th>id</th>
						<th>site</th>
						<th>connection</th>
						<th>PXE</th>
						<th>LAN</th>
						<th />
					</tr>
				</thead>
				<tbody>
					{(rows ?? []).map((row) => (
						<tr key={row.id}>
							<td>{row.id}</td>
							<td>{row.artifactId}</td>
							<td>
								<span class={`badge badge-${row.online ? "done" : "failed"}`}>{row.online ? "online" : "offline"}</span>
								<div class="muted">
									last seen <When date={row.lastSeen} />
								</div>
							</td>
							<td>
								<span class={`badge badge-${row.on ? "working" : "queued"}`}>{row.on ? "on" : "off"}</span> {row.state !== (row.on ? "on" : "off") && row.state}
								{row.stateReason && <div class="muted">{row.stateReason}</div>}
							</td>
							<td>
								<code>{row.device ?? "—"}</code> <code>{row.range ?? ""}</code>
							</td>
							<td class="row-actions">
								<button disabled={!row.online} onClick={() => setStatus(row, !row.on)}>
									Turn {row.on ? "off" : "on"}
								</button>
								<button class="secondary" disabled={!row.online} onClick={() => setEditing(row)}>
									Settings
								</button>
							</td>
						</tr>
					))}
				</tbody>
			</table>
			{rows?.length === 0 && <p class="muted">No distributor has connected yet.</p>}
		</Section>
	);
}
