import { useState } from "preact/hooks";
import { api } from "../api";
import { ErrorBox, Section, When, attempt } from "../components";
import { useRows } from "../hooks";

interface TextRow {
	id: number;
	text?: string;
	updatedAt: string;
	artifactId?: string;
	private?: boolean;
}

/** The text registries booting hosts read; sshkeys also carry a site and a private flag. */
const REGISTRIES = [
	{ name: "mainscripts", what: "iPXE menus (chained by the embedded script)" },
	{ name: "subscripts", what: "iPXE kernel/initrd logic (chained from a menu)" },
	{ name: "kickstarts", what: "Anaconda kickstarts (inst.ks=…)" },
	{ name: "prebootscripts", what: "fetched by a kickstart's %pre" },
	{ name: "postbootscripts", what: "installed by %post; registers the node" },
	{ name: "sshkeys", what: "SSH keys per site (private keys are sealed and never listed)" },
] as const;

function firstLine(text: string | undefined): string {
	return (text ?? "").split("\n").find((line) => line.trim() && !line.startsWith("#!")) ?? "";
}

function Editor({ registry, row, onDone }: { registry: string; row: TextRow | null; onDone: () => void }) {
	const isKey = registry === "sshkeys";
	const [text, setText] = useState(row?.text ?? "");
	const [artifactId, setArtifactId] = useState(row?.artifactId ?? "");
	const [isPrivate, setPrivate] = useState(row?.private ?? false);
	const [error, setError] = useState<unknown>(null);
	const save = () =>
		attempt(setError, async () => {
			const json = isKey ? { text, artifactId, private: isPrivate } : { text };
			if (row) await api(`/${registry}/${row.id}`, { method: "PUT", json });
			else await api(`/${registry}`, { method: "POST", json });
			onDone();
		});
	return (
		<div class="editor-panel">
			<h3>{row ? `${registry} #${row.id}` : `New ${registry.replace(/s$/, "")}`}</h3>
			{isKey && (
				<>
					<label for="registry-artifact">Site (artifactId)</label>
					<input id="registry-artifact" value={artifactId} onInput={(e) => setArtifactId(e.currentTarget.value)} />
					<label class="inline">
						<input id="registry-private" type="checkbox" checked={isPrivate} onChange={(e) => setPrivate(e.currentTarget.checked)} /> private key
					</label>
				</>
			)}
			<label for="registry-text">Text</label>
			<textarea id="registry-text" class="editor" rows={16} spellcheck={false} value={text} onInput={(e) => setText(e.currentTarget.value)} />
			<div class="actions">
				<button id="registry-save" onClick={save}>
					{row ? "Save" : "Create"}
				</button>
				<button class="secondary" onClick={onDone}>
					Cancel
				</button>
				{row && !isKey && (
					<a href={`/api/${registry}/${row.id}`} target="_blank" rel="noreferrer">
						raw text as hosts get it
					</a>
				)}
			</div>
			<ErrorBox error={error} />
		</div>
	);
}

function Registry({ registry }: { registry: string }) {
	const { rows, error, reload } = useRows<TextRow>(registry);
	const [editing, setEditing] = useState<TextRow | "new" | null>(null);
	const [actionError, setActionError] = useState<unknown>(null);
	// Lists leave private key text out: the editor loads the full row.
	const open = (row: TextRow) => attempt(setActionError, async () => setEditing(await api<TextRow>(`/${registry}/${row.id}`)));
	const remove = (row: TextRow) =>
		confirm(`Delete ${registry} #${row.id}?`) && attempt(setActionError, async () => {
			await api(`/${registry}/${row.id}`, { method: "DELETE" });
			await reload();
		});
	const done = () => {
		setEditing(null);
		void reload();
	};
	return (
		<div>
			<div class="actions">
				<button id="registry-new" onClick={() => setEditing("new")}>
					New
				</button>
			</div>
			{editing && <Editor key={editing === "new" ? "new" : editing.id} registry={registry} row={editing === "new" ? null : editing} onDone={done} />}
			<ErrorBox error={error ?? actionError} />
			<table>
				<thead>
					<tr>
						<th>id</th>
						<th>first line</th>
						{registry === "sshkeys" && <th>site</th>}
						<th>updated</th>
						<th />
					</tr>
				</thead>
				<tbody>
					{(rows ?? []).map((row) => (
						<tr key={row.id}>
							<td>{row.id}</td>
							<td>
								<code>{registry === "sshkeys" && row.private ? "(private key)" : firstLine(row.text)}</code>
							</td>
							{registry === "sshkeys" && <td>{row.artifactId}</td>}
							<td>
								<When date={row.updatedAt} />
							</td>
							<td class="row-actions">
								<button class="secondary" onClick={() => open(row)}>
									Edit
								</button>
								<button class="danger" onClick={() => remove(row)}>
									Delete
								</button>
							</td>
						</tr>
					))}
				</tbody>
			</table>
			{rows?.length === 0 && <p class="muted">None yet.</p>}
		</div>
	);
}

export function RegistriesView() {
	const [registry, setRegistry] = useState<string>(REGISTRIES[0].name);
	return (
		<Section title="Registries — what booting hosts fetch over HTTP">
			<div class="tabs" role="tablist">
				{REGISTRIES.map((r) => (
					<button key={r.name} role="tab" aria-selected={r.name === registry} class={r.name === registry ? "tab active" : "tab"} onClick={() => setRegistry(r.name)}>
						{r.name}
					</button>
				))}
			</div>
			<p class="muted">
				{REGISTRIES.find((r) => r.name === registry)?.what}. Hosts fetch <code>/api/{registry}/&lt;id&gt;</code> as plain text, without a token.
			</p>
			<Registry key={registry} registry={registry} />
		</Section>
	);
}
