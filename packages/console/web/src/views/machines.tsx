import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { ErrorBox, Section, StatusBadge, When, attempt } from "../components";
import type { MachineRow, MachineStatus } from "@clusterplatform/machines";

/** A machine as the API sends it (dates as JSON strings). */
type Machine = Omit<MachineRow, "lastSeen" | "bmcPassword"> & { lastSeen: string | null; warning?: string | null };

interface Plan {
	profile: { id: number; name: string } | null;
	selector: { id: number; name: string; ranks: number[]; matchedOn: string[] } | null;
	why: string;
	scripts: Record<string, string>;
	problems: { script: string; missing: string[]; message: string }[];
}

const POWER_ACTIONS = ["on", "off", "cycle", "status"] as const;
/** The statuses the list filters on (the API's own list; a type import keeps the server's code out of the bundle). */
const STATUSES: readonly MachineStatus[] = ["unknown", "discovered", "provisioning", "ready", "failed"];
/** Machines per page of the main list. */
const PAGE_SIZE = 50;
/** Statuses move on their own (boots, provisioning): the lists follow them. */
const REFRESH_MS = 3000;

interface Page<T> {
	rows: T[];
	total: number;
	page: number;
	totalPages: number;
}

/** One page of GET /api/machines, newest first, filtered by the server; reloaded every REFRESH_MS. */
function useMachinesPage(status: string, page: number, pageSize: number) {
	const [result, setResult] = useState<Page<Machine> | null>(null);
	const [error, setError] = useState<unknown>(null);
	const reload = useCallback(async () => {
		const query = new URLSearchParams({ page: String(page), pageSize: String(pageSize), sort: "-id" });
		if (status) query.set("status", status);
		try {
			setResult(await api<Page<Machine>>(`/machines?${query}`));
			setError(null);
		} catch (err) {
			setError(err);
		}
	}, [status, page, pageSize]);
	useEffect(() => {
		void reload();
		const timer = setInterval(() => void reload(), REFRESH_MS);
		return () => clearInterval(timer);
	}, [reload]);
	return { result, rows: result?.rows ?? null, error, reload };
}

/** Previous/next over a list's pages, with where the list stands. */
function Pager({ id, result, onPage }: { id: string; result: Page<unknown> | null; onPage: (page: number) => void }) {
	if (!result || result.totalPages <= 1) return null;
	return (
		<div class="actions pager" id={id}>
			<button class="secondary small" disabled={result.page <= 1} data-page="previous" onClick={() => onPage(result.page - 1)}>
				← newer
			</button>
			<span class="muted">
				page {result.page} of {result.totalPages} ({result.total} machines)
			</span>
			<button class="secondary small" disabled={result.page >= result.totalPages} data-page="next" onClick={() => onPage(result.page + 1)}>
				older →
			</button>
		</div>
	);
}

/** "rack=r1; room=2" → {rack: "r1", room: "2"}; the API checks keys and values and names a bad one. */
export function parseLabels(text: string): Record<string, string> {
	const labels: Record<string, string> = {};
	for (const pair of text.split(/[;,]/).map((p) => p.trim()).filter(Boolean)) {
		const at = pair.indexOf("=");
		labels[at < 0 ? pair : pair.slice(0, at).trim()] = at < 0 ? "" : pair.slice(at + 1).trim();
	}
	return labels;
}

/** What POST /api/machines/import takes: a JSON array (or {machines: […]}) as rows, anything else as CSV. */
export function importBody(text: string): { machines: unknown[] } | { csv: string } {
	const trimmed = text.trimStart();
	if (!trimmed.startsWith("[") && !trimmed.startsWith("{")) return { csv: text };
	const parsed = JSON.parse(text) as unknown;
	if (Array.isArray(parsed)) return { machines: parsed };
	const machines = (parsed as { machines?: unknown }).machines;
	if (!Array.isArray(machines)) throw new Error('JSON must be an array of machines or {"machines": [...]}');
	return { machines };
}

/** GET /api/machines/:id/plan: what the machine would boot now, and why. */
function PlanPanel({ machine, onClose }: { machine: Machine; onClose: () => void }) {
	const [plan, setPlan] = useState<Plan | null>(null);
	const [error, setError] = useState<unknown>(null);
	useEffect(() => {
		void attempt(setError, async () => setPlan(await api<Plan>(`/machines/${machine.id}/plan`)));
	}, [machine.id]);
	return (
		<div class="editor-panel" id="machine-plan" data-id={machine.id}>
			<h3>
				Plan of {machine.name} <span class="muted">#{machine.id}</span>
			</h3>
			<ErrorBox error={error} />
			{plan && (
				<>
					<p>
						profile <strong id="plan-profile">{plan.profile ? `${plan.profile.name} (#${plan.profile.id})` : "none"}</strong>
						{plan.selector && (
							<>
								{" "}
								by selector <strong id="plan-selector">{plan.selector.name}</strong> (#{plan.selector.id})
							</>
						)}
					</p>
					<p class="muted" id="plan-why">
						{plan.why}
					</p>
					{plan.problems.map((p) => (
						<div class="error plan-problem" key={p.script}>
							{p.script}: {p.message}
						</div>
					))}
					{Object.entries(plan.scripts).map(([name, text]) => (
						<div key={name}>
							<h4>{name}</h4>
							<pre id={`plan-script-${name}`}>{text}</pre>
						</div>
					))}
				</>
			)}
			<div class="actions">
				<button class="secondary" onClick={onClose}>
					Close
				</button>
			</div>
		</div>
	);
}

/**
 * Power through the machine's BMC (PUT /api/machines/:id/power, carried out by its site's
 * distributor); the BMC's answer, or why there is none, stays next to the buttons.
 */
function PowerButtons({ machine }: { machine: Machine }) {
	const [answer, setAnswer] = useState<string | null>(null);
	const [error, setError] = useState<unknown>(null);
	const [busy, setBusy] = useState(false);
	const power = async (action: (typeof POWER_ACTIONS)[number]) => {
		setBusy(true);
		setAnswer(null);
		await attempt(setError, async () => {
			const result = await api<{ power: string }>(`/machines/${machine.id}/power`, { method: "PUT", json: { action } });
			setAnswer(action === "status" ? `power is ${result.power}` : `${action}: power is ${result.power}`);
		});
		setBusy(false);
	};
	if (!machine.bmcProtocol) return <span class="muted">no BMC</span>;
	return (
		<div class="power" id={`power-${machine.id}`}>
			{POWER_ACTIONS.map((action) => (
				<button key={action} class="secondary small" disabled={busy} data-power={action} onClick={() => power(action)}>
					{action === "status" ? "status" : `power ${action}`}
				</button>
			))}
			{busy && <div class="muted">asking the BMC…</div>}
			{answer && <div class="power-answer ok">{answer}</div>}
			<ErrorBox error={error} />
		</div>
	);
}

/** A discovered machine is adopted by an update: a name and what the operator knows, status `unknown`. */
function AdoptForm({ machine, onDone }: { machine: Machine; onDone: () => void }) {
	const [values, setValues] = useState({ name: machine.name, hostname: machine.hostname ?? "", artifactId: machine.artifactId ?? "", labels: "" });
	const [error, setError] = useState<unknown>(null);
	const field = (name: keyof typeof values, label: string, placeholder = "") => (
		<div>
			<label for={`adopt-${name}`}>{label}</label>
			<input id={`adopt-${name}`} value={values[name]} placeholder={placeholder} onInput={(e) => setValues({ ...values, [name]: e.currentTarget.value })} />
		</div>
	);
	const adopt = () =>
		attempt(setError, async () => {
			const json: Record<string, unknown> = { name: values.name.trim(), status: "unknown", statusReason: "" };
			if (values.hostname.trim()) json.hostname = values.hostname.trim();
			if (values.artifactId.trim()) json.artifactId = values.artifactId.trim();
			if (values.labels.trim()) json.labels = parseLabels(values.labels);
			await api(`/machines/${machine.id}`, { method: "PUT", json });
			onDone();
		});
	return (
		<div class="editor-panel" id="adopt-form" data-id={machine.id}>
			<h3>
				Adopt <code>{machine.macs.join(" ")}</code>
			</h3>
			<p class="muted">Once adopted, the machine gets its profile (by the selectors) at its next boot instead of the default for unknown machines.</p>
			<div class="row">
				{field("name", "Name")}
				{field("hostname", "Host name", "optional")}
			</div>
			<div class="row">
				{field("artifactId", "Site (artifactId)", "optional")}
				{field("labels", "Labels", "rack=r1; role=web")}
			</div>
			<div class="actions">
				<button id="adopt-save" onClick={adopt}>
					Adopt
				</button>
				<button class="secondary" onClick={onDone}>
					Cancel
				</button>
			</div>
			<ErrorBox error={error} />
		</div>
	);
}

const IMPORT_EXAMPLE = "name,macs,arch,firmware,artifactId,labels,bmcProtocol,bmcAddress,bmcUser,bmcPassword\nweb-01,52:54:00:12:34:56,x86_64,uefi,lab,rack=r1,ipmi,10.0.9.1,admin,secret\n";

/** POST /api/machines/import: CSV or JSON, all or nothing; a bad row is named by the API. */
function ImportPanel({ onDone }: { onDone: () => void }) {
	const [text, setText] = useState("");
	const [result, setResult] = useState<string | null>(null);
	const [error, setError] = useState<unknown>(null);
	const readFile = async (input: HTMLInputElement) => {
		const file = input.files?.[0];
		if (file) setText(await file.text());
	};
	const submit = () =>
		attempt(setError, async () => {
			setResult(null);
			const answer = await api<{ created: number; ids: number[] }>("/machines/import", { method: "POST", json: importBody(text) });
			setResult(`imported ${answer.created} machine${answer.created === 1 ? "" : "s"}`);
			setText("");
			onDone();
		});
	return (
		<div class="editor-panel" id="import-panel">
			<h3>Import machines</h3>
			<p class="muted">
				CSV with a header line naming the fields (MACs separated by spaces or <code>;</code>, labels as <code>key=value;key=value</code>), or JSON: an array of
				machines. All or nothing: one bad row is refused with its line and field, and nothing is written.
			</p>
			<input id="import-file" type="file" accept=".csv,.json,text/csv,application/json" onChange={(e) => void readFile(e.currentTarget)} />
			<textarea id="import-text" class="editor" rows={6} spellcheck={false} placeholder={IMPORT_EXAMPLE} value={text} onInput={(e) => setText(e.currentTarget.value)} />
			<div class="actions">
				<button id="import-submit" disabled={!text.trim()} onClick={submit}>
					Import
				</button>
				{result && (
					<span class="ok" id="import-result">
						{result}
					</span>
				)}
			</div>
			<ErrorBox error={error} />
		</div>
	);
}

function Identity({ machine }: { machine: Machine }) {
	const facts = [machine.manufacturer, machine.product, machine.serial && `serial ${machine.serial}`, machine.arch, machine.firmware].filter(Boolean);
	return (
		<>
			<code>{machine.macs.join(" ")}</code>
			{machine.uuid && <div class="muted">uuid {machine.uuid}</div>}
			{facts.length > 0 && <div class="muted">{facts.join(" · ")}</div>}
		</>
	);
}

function MachineStatus({ machine }: { machine: Machine }) {
	return (
		<>
			<StatusBadge status={machine.status} />
			{machine.statusReason && <div class="muted status-reason">{machine.statusReason}</div>}
			{machine.warning && <div class="note status-reason">{machine.warning}</div>}
		</>
	);
}

type Panel = { kind: "plan" | "adopt"; machine: Machine } | { kind: "import" } | null;

export function MachinesView() {
	const [status, setStatus] = useState("");
	const [page, setPage] = useState(1);
	const main = useMachinesPage(status, page, PAGE_SIZE);
	// Discovered machines are asked for by status, so none hides beyond the main list's page.
	const waiting = useMachinesPage("discovered", 1, PAGE_SIZE);
	const listed = main.rows ?? [];
	const discovered = waiting.rows ?? [];
	const rows = main.rows;
	const error = main.error ?? waiting.error;
	const reload = async () => {
		await Promise.all([main.reload(), waiting.reload()]);
	};
	const [panel, setPanel] = useState<Panel>(null);
	const [actionError, setActionError] = useState<unknown>(null);
	// A page past the end (machines were removed) moves back to the last one.
	useEffect(() => {
		if (main.result && main.result.totalPages > 0 && page > main.result.totalPages) setPage(main.result.totalPages);
	}, [main.result, page]);
	const close = () => {
		setPanel(null);
		void reload();
	};
	const provision = (machine: Machine) =>
		attempt(setActionError, async () => {
			await api(`/machines/${machine.id}/provision`, { method: "POST", json: {} });
			await reload();
		});
	const remove = (machine: Machine) =>
		confirm(`Delete machine #${machine.id} (${machine.name})?`) &&
		attempt(setActionError, async () => {
			await api(`/machines/${machine.id}`, { method: "DELETE" });
			await reload();
		});
	const panelFor = (id: number, kind: "plan" | "adopt") => panel !== null && panel.kind === kind && panel.machine.id === id;
	return (
		<>
			<Section title="Machines — known before they boot" id="machines">
				<p class="muted">
					Machines boot <code>/api/boot?mac=…</code>, which answers each one its profile's script (see a machine's plan). Power goes through the machine's BMC
					from its site's distributor; <em>Provision</em> sets the next boot to the network, power-cycles, and the status follows the boot to ready or
					failed.
				</p>
				<div class="actions">
					<button id="import-open" class="secondary" onClick={() => setPanel({ kind: "import" })}>
						Import…
					</button>
				</div>
				{panel?.kind === "import" && <ImportPanel onDone={() => void reload()} />}
				<ErrorBox error={error ?? actionError} />
				<div class="actions">
					<label for="machines-status">status</label>
					<select
						id="machines-status"
						value={status}
						onChange={(e) => {
							setStatus(e.currentTarget.value);
							setPage(1);
						}}
					>
						<option value="">any</option>
						{STATUSES.map((value) => (
							<option key={value} value={value}>
								{value}
							</option>
						))}
					</select>
				</div>
				<table id="machines-table">
					<thead>
						<tr>
							<th>id</th>
							<th>name</th>
							<th>MACs / hardware</th>
							<th>site</th>
							<th>status</th>
							<th>last seen</th>
							<th>power</th>
							<th />
						</tr>
					</thead>
					<tbody>
						{listed.map((machine) => (
							<tr key={machine.id} data-id={machine.id} data-status={machine.status} class={panelFor(machine.id, "plan") ? "selected" : ""}>
								<td>{machine.id}</td>
								<td>
									{machine.name}
									{machine.localnodeId !== null && <div class="muted">localnode #{machine.localnodeId}</div>}
								</td>
								<td>
									<Identity machine={machine} />
								</td>
								<td>{machine.artifactId ?? <span class="muted">—</span>}</td>
								<td>
									<MachineStatus machine={machine} />
								</td>
								<td>
									<When date={machine.lastSeen} />
								</td>
								<td>
									<PowerButtons machine={machine} />
								</td>
								<td class="row-actions">
									<button class="secondary" data-action="plan" onClick={() => setPanel({ kind: "plan", machine })}>
										Plan
									</button>
									<button disabled={!machine.bmcProtocol} data-action="provision" onClick={() => provision(machine)}>
										Provision
									</button>
									<button class="danger" onClick={() => remove(machine)}>
										Delete
									</button>
								</td>
							</tr>
						))}
					</tbody>
				</table>
				<Pager id="machines-pager" result={main.result} onPage={setPage} />
				{rows !== null && listed.length === 0 && <p class="muted">{status ? `No machine is ${status}.` : "No machine yet: import them, or adopt one that booted below."}</p>}
				{panel?.kind === "plan" && <PlanPanel key={panel.machine.id} machine={panel.machine} onClose={close} />}
			</Section>
			<Section title="Discovered — booted, not yet adopted" id="discovered">
				<p class="muted">
					A MAC the inventory did not know, as iPXE told it. Until adopted, it gets the default for unknown machines (<code>MACHINES_UNKNOWN_BOOT</code>).
				</p>
				<table id="discovered-table">
					<thead>
						<tr>
							<th>id</th>
							<th>MAC / hardware</th>
							<th>first seen</th>
							<th>last seen</th>
							<th />
						</tr>
					</thead>
					<tbody>
						{discovered.map((machine) => (
							<tr key={machine.id} data-id={machine.id} class={panelFor(machine.id, "adopt") ? "selected" : ""}>
								<td>{machine.id}</td>
								<td>
									<Identity machine={machine} />
								</td>
								<td class="muted">{machine.statusReason}</td>
								<td>
									<When date={machine.lastSeen} />
								</td>
								<td class="row-actions">
									<button data-action="adopt" onClick={() => setPanel({ kind: "adopt", machine })}>
										Adopt
									</button>
									<button class="danger" onClick={() => remove(machine)}>
										Delete
									</button>
								</td>
							</tr>
						))}
					</tbody>
				</table>
				{waiting.result && waiting.result.total > discovered.length && (
					<p class="muted" id="discovered-more">
						The {discovered.length} newest of {waiting.result.total} shown: adopt or delete these to see the others.
					</p>
				)}
				{waiting.rows !== null && discovered.length === 0 && <p class="muted">No unknown machine has booted.</p>}
				{panel?.kind === "adopt" && <AdoptForm key={panel.machine.id} machine={panel.machine} onDone={close} />}
			</Section>
		</>
	);
}
