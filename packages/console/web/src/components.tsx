import type { ComponentChildren } from "preact";
import { ApiError, type BuildRow } from "./api";

/** An error as the operator should read it: the API's message and every field it names. */
export function ErrorBox({ error }: { error: unknown }) {
	if (!error) return null;
	const problem = error instanceof ApiError ? error : null;
	return (
		<div class="error" role="alert">
			<strong>{problem ? `${problem.status}: ` : ""}</strong>
			{error instanceof Error ? error.message : String(error)}
			{/* The message already says one field's problem; several are listed one by one. */}
			{problem && problem.fields.length > 1 && (
				<ul>
					{problem.fields.map((f) => (
						<li key={f.field}>
							<code>{f.field}</code>: {f.message}
						</li>
					))}
				</ul>
			)}
		</div>
	);
}

export function StatusBadge({ status }: { status: string }) {
	return <span class={`badge badge-${status}`}>{status}</span>;
}

/** A builder row's state: status, a progress bar, its error or its download link. */
export function BuildProgress({ entity, row, label }: { entity: string; row: BuildRow; label?: string }) {
	const progress = Math.max(0, Math.min(100, Number(row.progress) || 0));
	const file = row.url ? decodeURIComponent(row.url.split("/").pop() ?? "") : "";
	return (
		<div class="build" data-entity={entity} data-id={row.id} data-status={row.status}>
			<div class="build-head">
				<span>
					{label ?? entity} <span class="muted">#{row.id}</span>
				</span>
				<StatusBadge status={row.status} />
			</div>
			<progress max={100} value={progress} aria-label={`${entity} ${row.id} progress`} />
			<span class="muted">{progress}%</span>
			{row.error && <div class="error">{row.error}</div>}
			{row.status === "done" && row.url && (
				<a class="download" href={row.url} download={file}>
					Download {file}
				</a>
			)}
		</div>
	);
}

export function Section({ title, children, id }: { title: string; children: ComponentChildren; id?: string }) {
	return (
		<section class="card" id={id}>
			<h2>{title}</h2>
			{children}
		</section>
	);
}

export function When({ date }: { date: string | null | undefined }) {
	if (!date) return <span class="muted">never</span>;
	const d = new Date(date);
	return <time dateTime={d.toISOString()} title={d.toISOString()}>{d.toLocaleString()}</time>;
}

/** Run an action, showing its error; returns whether it succeeded. */
export async function attempt(setError: (e: unknown) => void, action: () => Promise<unknown>): Promise<boolean> {
	setError(null);
	try {
		await action();
		return true;
	} catch (err) {
		setError(err);
		return false;
	}
}
