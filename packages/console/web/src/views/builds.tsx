import { useEffect, useState } from "preact/hooks";
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

interface IpxeToolchain {
	nodeID: string;
	/** The worker did not answer. */
	error?: string;
	mode: "source" | "prebuilt";
	embedded: boolean;
	source: string;
	platforms: { platform: string; state: string; seconds?: number; error?: string }[];
}

/** How iPXE builds are made: compiled from source (each platform's object tree, prepared or not) or Debian's binaries. */
function IpxeToolchainPanel() {
	const [workers, setWorkers] = useState<IpxeToolchain[] | null>(null);
	const [error, setError] = useState<unknown>(null);
	useEffect(() => {
		let timer: ReturnType<typeof setTimeout> | undefined;
		const load = () =>
			attempt(setError, async () => {
				const { workers: current } = await api<{ workers: IpxeToolchain[] }>("/ipxes/toolchain");
				setWorkers(current);
				// Followed while a tree is being prepared (builds for it wait meanwhile).
				if (current.some((w) => w.platforms?.some((p) => p.state === "preparing"))) timer = setTimeout(load, 2000);
			});
		void load();
		return () => clearTimeout(timer);
	}, []);
	return (
		<Section title="iPXE toolchain" id="ipxe-toolchain">
			<ErrorBox error={error} />
			{workers?.length === 0 && <p class="muted">No iPXE worker is connected: builds wait in the queue until one is.</p>}
			{workers?.map((toolchain) => (
				<p key={toolchain.nodeID}>
					<code>{toolchain.nodeID}</code>:{" "}
					{toolchain.error ? (
						<span class="error">did not answer ({toolchain.error})</span>
					) : toolchain.mode === "source" ? (
						<>
							compiled from <code>{toolchain.source}</code>, scripts embedded.{" "}
							{toolchain.platforms.map((p) => (
								<span key={p.platform} class="tag" data-state={p.state} title={p.error ?? ""}>
									{p.platform}: {p.state}
									{p.seconds ? ` (${p.seconds.toFixed(0)} s)` : ""}{" "}
								</span>
							))}
						</>
					) : (
						<>Debian's prebuilt binaries from <code>{toolchain.source}</code>: scripts are not embedded (no iPXE source installed).</>
					)}
				</p>
			))}
		</Section>
	);
}

export function BuildsView() {
	return (
		<div>
			<p class="muted">Artifact downloads (/api/artifacts/…) need no token: booting hosts fetch them too.</p>
			<IpxeToolchainPanel />
			{BUILDERS.map((builder) => (
				<BuilderTable key={builder.entity} {...builder} />
			))}
		</div>
	);
}
