import { useState } from "preact/hooks";
import { FINISHED, api, type BuildRow } from "../api";
import { ErrorBox, Section, StatusBadge, When, attempt } from "../components";
import { useRows } from "../hooks";

/** The builders and the inputs that tell their rows apart. */
const BUILDERS = [
	{ entity: "ipxes", title: "iPXE", inputs: (r: BuildRow) => `${r.platform}/${r.driver}.${r.extension}${r.embedded === false ? " (script not embedded)" : ""}` },
	{ entity: "grubs", title: "GRUB", inputs: (r: BuildRow) => `${r.architecture} ${r.fragment} "${r.label}"` },
	{ entity: "syslinuxs", title: "SYSLINUX", inputs: (r: BuildRow) => String(r.fragment) },
	{ entity: "isos", title: "ISOs", inputs: (r: BuildRow) => `"${r.label}"` },
] as const;

const active = (rows: BuildRow[]) => rows.some((row) => !FINISHED.includes(row.status));

function BuilderTable({ entity, title, inputs }: (typeof BUILDERS)[number]) {
	// Refreshed every second while a build is queued or working.
	const { rows, error, reload } = useRows<BuildRow>(entity, 1000, active);
	const [actionError, setActionError] = useState<unknown>(null);
	const remove = (row: BuildRow) =>
		confirm(`Delete ${entity} #${row.id} and its artifact?`) &&
		attempt(setActionError, async () => {
			await api(`/${entity}/${row.id}`, { method: "DELETE" });
			await reload();
		});
	return (
		<Section title={title} id={`builds-${entity}`}>
			<ErrorBox error={error ?? actionError} />
			{rows?.length === 0 ? (
				<p class="muted">No {entity} yet — start one from the Deploy page.</p>
			) : (
				<table>
					<thead>
						<tr>
							<th>id</th>
							<th>inputs</th>
							<th>status</th>
							<th>progress</th>
							<th>updated</th>
							<th />
						</tr>
					</thead>
					<tbody>
						{(rows ?? []).map((row) => (
							<tr key={row.id} data-status={row.status}>
								<td>{row.id}</td>
								<td>
									<code>{inputs(row)}</code>
									{row.error && <div class="error">{row.error}</div>}
								</td>
								<td>
									<StatusBadge status={row.status} />
								</td>
								<td>
									<progress max={100} value={Number(row.progress) || 0} /> {row.progress}%
								</td>
								<td>
									<When date={row.updatedAt} />
								</td>
								<td class="row-actions">
									{row.status === "done" && row.url && (
										<a href={row.url} download>
											download
										</a>
									)}
									<button class="danger" onClick={() => remove(row)}>
										Delete
									</button>
								</td>
							</tr>
						))}
					</tbody>
				</table>
			)}
		</Section>
	);
}

export function BuildsView() {
	return (
		<div>
			<p class="muted">Artifact downloads (/api/artifacts/…) need no token: booting hosts fetch them too.</p>
			{BUILDERS.map((builder) => (
				<BuilderTable key={builder.entity} {...builder} />
			))}
		</div>
	);
}
