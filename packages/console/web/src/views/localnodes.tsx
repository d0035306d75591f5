import { useState } from "preact/hooks";
import { api } from "../api";
import { ErrorBox, Section, When, attempt } from "../components";
import { useRows } from "../hooks";
import type { ScriptResult } from "@clusterplatform/distributor";

interface Localnode {
	id: number;
	ip: string;
	artifactId: string;
	pingable: boolean;
	reachable: boolean | null;
	reachableCheckedAt: string | null;
	hostKey: string | null;
	createdAt: string;
}

interface Sshkey {
	id: number;
	artifactId: string;
	private: boolean;
}

function Reachability({ node }: { node: Localnode }) {
	const [label, status] = node.reachable === null ? ["not checked yet", "queued"] : node.reachable ? ["reachable", "done"] : ["unreachable", "failed"];
	return (
		<>
			<span class={`badge badge-${status}`}>{label}</span>
			<div class="muted">
				checked <When date={node.reachableCheckedAt} />
			</div>
		</>
	);
}

/**
 * A node's host key is accepted by an operator before its first script: the key the node presents
 * (GET /api/localnodes/:id/hostkey, read through its site's distributor) is shown to compare with
 * the node's own, then accepted (PUT).
 */
function HostKeyCheck({ node, onAccepted }: { node: Localnode; onAccepted: (hostKey: string) => void }) {
	const [presented, setPresented] = useState<string | null>(null);
	const [error, setError] = useState<unknown>(null);
	const look = () => attempt(setError, async () => setPresented((await api<{ presented: string }>(`/localnodes/${node.id}/hostkey`)).presented));
	const accept = () =>
		attempt(setError, async () => {
			const row = await api<Localnode>(`/localnodes/${node.id}/hostkey`, { method: "PUT", json: { hostKey: presented } });
			onAccepted(row.hostKey!);
		});
	return (
		<div class="host-key" id="host-key">
			<p>No SSH host key is accepted for this node yet: scripts go only to a node presenting the key an operator accepted.</p>
			{presented ? (
				<>
					<p>
						It presents <code id="presented-host-key">{presented}</code>. Compare it with the node's own (<code>ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub</code> on its
						console).
					</p>
					<button id="accept-host-key" onClick={accept}>
						Accept this key
					</button>
				</>
			) : (
				<button id="show-host-key" onClick={look}>
					Show the key it presents
				</button>
			)}
			<ErrorBox error={error} />
		</div>
	);
}

/** PUT /api/localnodes/:id/script: runs as root over SSH from the site's distributor. */
function ScriptPanel({ node }: { node: Localnode }) {
	const [hostKey, setHostKey] = useState(node.hostKey);
	const keys = useRows<Sshkey>("sshkeys");
	const [script, setScript] = useState("#!/bin/sh\nuname -a\nuptime\n");
	const [sshkeyId, setSshkeyId] = useState("");
	const [timeout, setTimeoutSeconds] = useState("300");
	const [result, setResult] = useState<ScriptResult | null>(null);
	const [running, setRunning] = useState(false);
	const [error, setError] = useState<unknown>(null);
	const privateKeys = (keys.rows ?? []).filter((k) => k.private && k.artifactId === node.artifactId);
	const runScript = async () => {
		setRunning(true);
		setResult(null);
		await attempt(setError, async () => {
			const json = { script, timeout: Number(timeout), ...(sshkeyId ? { sshkeyId: Number(sshkeyId) } : {}) };
			setResult(await api<ScriptResult>(`/localnodes/${node.id}/script`, { method: "PUT", json }));
		});
		setRunning(false);
	};
	return (
		<div class="editor-panel" id="script-panel">
			<h3>
				Run a script on #{node.id} ({node.ip}, site {node.artifactId})
			</h3>
			{hostKey ? (
				<p class="muted">
					host key <code id="accepted-host-key">{hostKey}</code>
				</p>
			) : (
				<HostKeyCheck node={node} onAccepted={setHostKey} />
			)}
			<label for="script-text">Script (runs as root)</label>
			<textarea id="script-text" class="editor" rows={8} spellcheck={false} value={script} onInput={(e) => setScript(e.currentTarget.value)} />
			<div class="row">
				<div>
					<label for="script-key">SSH key</label>
					<select id="script-key" value={sshkeyId} onChange={(e) => setSshkeyId(e.currentTarget.value)}>
						<option value="">newest private key of the site</option>
						{privateKeys.map((k) => (
							<option key={k.id} value={k.id}>
								sshkeys #{k.id}
							</option>
						))}
					</select>
				</div>
				<div>
					<label for="script-timeout">Timeout (s)</label>
					<input id="script-timeout" type="number" min={1} max={3600} value={timeout} onInput={(e) => setTimeoutSeconds(e.currentTarget.value)} />
				</div>
			</div>
			<div class="actions">
				<button id="run-script" disabled={running || !hostKey} onClick={runScript}>
					{running ? "Running…" : "Run"}
				</button>
			</div>
			<ErrorBox error={error} />
			{result && (
				<div class="script-result">
					<p>
						exit code <strong>{result.code ?? "—"}</strong>
						{result.signal ? `, signal ${result.signal}` : ""}
					</p>
					<h4>stdout</h4>
					<pre>{result.stdout}</pre>
					<h4>stderr</h4>
					<pre>{result.stderr}</pre>
				</div>
			)}
		</div>
	);
}

export function LocalnodesView() {
	const { rows, error, reload } = useRows<Localnode>("localnodes", 10_000);
	const [selected, setSelected] = useState<Localnode | null>(null);
	const [actionError, setActionError] = useState<unknown>(null);
	const remove = (node: Localnode) =>
		confirm(`Forget localnode #${node.id} (${node.ip})?`) &&
		attempt(setActionError, async () => {
			await api(`/localnodes/${node.id}`, { method: "DELETE" });
			if (selected?.id === node.id) setSelected(null);
			await reload();
		});
	return (
		<Section title="Localnodes — installed hosts">
			<p class="muted">
				Hosts register themselves from their post-boot script (<code>POST /api/localnodes?ip=…&amp;artifactId=…</code>). Reachability is their SSH port as
				seen from the site's distributor, checked every 30 s. Each host's boot steps are under Boots.
			</p>
			<ErrorBox error={error ?? actionError} />
			<table>
				<thead>
					<tr>
						<th>id</th>
						<th>address</th>
						<th>site</th>
						<th>reachability</th>
						<th>registered</th>
						<th />
					</tr>
				</thead>
				<tbody>
					{(rows ?? []).map((node) => (
						<tr key={node.id} class={selected?.id === node.id ? "selected" : ""}>
							<td>{node.id}</td>
							<td>
								<code>{node.ip}</code>
							</td>
							<td>{node.artifactId}</td>
							<td>
								<Reachability node={node} />
							</td>
							<td>
								<When date={node.createdAt} />
							</td>
							<td class="row-actions">
								<button onClick={() => setSelected(node)}>Run script</button>
								<button class="danger" onClick={() => remove(node)}>
									Forget
								</button>
							</td>
						</tr>
					))}
				</tbody>
			</table>
			{rows?.length === 0 && <p class="muted">No host has registered yet.</p>}
			{selected && <ScriptPanel key={selected.id} node={selected} />}
		</Section>
	);
}
