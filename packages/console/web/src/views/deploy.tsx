import { useEffect, useState } from "preact/hooks";
import { ApiError, api, publicUrl, watchBuild, type BuildRow } from "../api";
import { BuildProgress, ErrorBox, Section, attempt } from "../components";
import { useRows, useUnmountSignal } from "../hooks";
import type { DistributorRow as Distributor } from "@clusterplatform/distributor";

interface Mainscript {
	id: number;
	text: string;
}

const EXAMPLE_MAINSCRIPT = [
	"#!ipxe",
	"# The menu every booting host fetches (GET /api/mainscripts/<id>).",
	"echo Booted by the Cluster Platform Provisioner",
	"menu Boot menu",
	"item shell iPXE shell",
	"item exit Continue with the next boot device",
	"choose target && goto ${target}",
	":shell",
	"shell",
	":exit",
	"exit",
	"",
].join("\n");

/** The iPXE bootloaders a deployment needs: the ISO's BIOS and UEFI, and BIOS PXE for a distributor. */
const IPXE_TARGETS = [
	{ key: "bios", label: "BIOS iPXE for the ISO (ipxe.lkrn)", platform: "bin-x86_64-pcbios", driver: "ipxe", extension: "lkrn" },
	{ key: "uefi", label: "UEFI iPXE, ISO and PXE (ipxe.efi)", platform: "bin-x86_64-efi", driver: "ipxe", extension: "efi" },
	{ key: "pxe", label: "BIOS iPXE for PXE (undionly.kpxe)", platform: "bin-x86_64-pcbios", driver: "undionly", extension: "kpxe" },
] as const;
type IpxeKey = (typeof IPXE_TARGETS)[number]["key"];

/** The other parts of a hybrid BIOS+UEFI ISO, each built by its builder and given to isos by id. */
const ISO_PARTS = [
	{ field: "grubImgId", entity: "grubs", label: "GRUB UEFI image (grub.img)", body: (label: string) => ({ label, architecture: "x64", fragment: "img" }) },
	{ field: "ldLinuxId", entity: "syslinuxs", label: "SYSLINUX ldlinux.c32", body: () => ({ fragment: "ldlinux.c32" }) },
	{ field: "isolinuxBinId", entity: "syslinuxs", label: "ISOLINUX isolinux.bin", body: () => ({ fragment: "isolinux.bin" }) },
	{ field: "isohdpfxBinId", entity: "syslinuxs", label: "ISOLINUX MBR isohdpfx.bin", body: () => ({ fragment: "isohdpfx.bin" }) },
] as const;

type Builds = Record<string, { entity: string; label: string; row: BuildRow }>;

/**
 * POST each build, then follow them all to done or failed; every state lands in `builds`. The POSTs
 * go one by one, so a refused one (422) stops the rest from being queued at all.
 */
async function buildAll(
	jobs: { key: string; entity: string; label: string; body: unknown }[],
	setBuilds: (update: (current: Builds) => Builds) => void,
	signal: AbortSignal,
): Promise<Record<string, BuildRow>> {
	const report = (key: string, entity: string, label: string) => (row: BuildRow) => setBuilds((current) => ({ ...current, [key]: { entity, label, row } }));
	const created: { job: (typeof jobs)[number]; row: BuildRow }[] = [];
	for (const job of jobs) {
		const row = await api<BuildRow>(`/${job.entity}`, { method: "POST", json: job.body });
		report(job.key, job.entity, job.label)(row);
		created.push({ job, row });
	}
	const finished = await Promise.all(created.map(({ job, row }) => watchBuild(job.entity, row.id, report(job.key, job.entity, job.label), signal)));
	const failed = finished.filter((row) => row.status === "failed");
	if (failed.length) throw new Error(`${failed.length} build(s) failed: ${failed.map((row) => row.error).join("; ")}`);
	return Object.fromEntries(created.map(({ job }, i) => [job.key, finished[i]!]));
}

function Builds({ builds, only }: { builds: Builds; only: string[] }) {
	const shown = only.filter((key) => builds[key]);
	if (!shown.length) return null;
	return (
		<div class="builds">
			{shown.map((key) => (
				<BuildProgress key={key} entity={builds[key]!.entity} row={builds[key]!.row} label={builds[key]!.label} />
			))}
		</div>
	);
}

/**
 * The deployment, one page: a mainscript (the menu hosts get) → iPXE bootloaders that chain to it →
 * an ISO to boot from, or a distributor that answers PXE on the LAN.
 */
export function DeployView() {
	const signal = useUnmountSignal();
	const mainscripts = useRows<Mainscript>("mainscripts");
	const distributors = useRows<Distributor>("distributors", 3000);
	const [base, setBase] = useState(location.origin);
	const [choice, setChoice] = useState<"new" | number>("new");
	const [text, setText] = useState(EXAMPLE_MAINSCRIPT);
	const [mainscriptId, setMainscriptId] = useState<number | null>(null);
	const [embedded, setEmbedded] = useState("");
	const [label, setLabel] = useState("CLUSTERPLATFORM");
	const [builds, setBuilds] = useState<Builds>({});
	const [ipxes, setIpxes] = useState<Record<IpxeKey, BuildRow> | null>(null);
	const [busy, setBusy] = useState<string | null>(null);
	const [errors, setErrors] = useState<Record<string, unknown>>({});
	const [distributorId, setDistributorId] = useState<number | null>(null);
	const [device, setDevice] = useState("eth0");
	const [range, setRange] = useState("");
	const [handedTo, setHandedTo] = useState<Distributor | null>(null);
	const setError = (step: string) => (error: unknown) => setErrors((current) => ({ ...current, [step]: error }));

	useEffect(() => void publicUrl().then(setBase), []);
	const mainscriptUrl = mainscriptId ? `${base}/api/mainscripts/${mainscriptId}` : null;
	useEffect(() => {
		if (mainscriptUrl) setEmbedded(`#!ipxe\ndhcp\nchain ${mainscriptUrl}\n`);
	}, [mainscriptUrl]);

	const pick = (value: string) => {
		if (value === "new") {
			setChoice("new");
			setText(EXAMPLE_MAINSCRIPT);
			return;
		}
		const row = mainscripts.rows?.find((r) => r.id === Number(value));
		setChoice(Number(value));
		setText(row?.text ?? "");
	};

	const saveMainscript = () =>
		attempt(setError("mainscript"), async () => {
			const row =
				choice === "new"
					? await api<Mainscript>("/mainscripts", { method: "POST", json: { text } })
					: await api<Mainscript>(`/mainscripts/${choice}`, { method: "PUT", json: { text } });
			setMainscriptId(row.id);
			setChoice(row.id);
			setIpxes(null);
			await mainscripts.reload();
		});

	const run = async (step: string, action: () => Promise<unknown>) => {
		setBusy(step);
		await attempt(setError(step), action);
		setBusy(null);
	};

	const buildIpxe = () =>
		run("ipxe", async () => {
			setIpxes(null);
			const jobs = IPXE_TARGETS.map(({ key, label, platform, driver, extension }) => ({ key, entity: "ipxes", label, body: { script: embedded, platform, driver, extension } }));
			setIpxes((await buildAll(jobs, setBuilds, signal)) as Record<IpxeKey, BuildRow>);
		});

	const buildIso = () =>
		run("iso", async () => {
			const parts = await buildAll(
				ISO_PARTS.map((part) => ({ key: part.field, entity: part.entity, label: part.label, body: part.body(label) })),
				setBuilds,
				signal,
			);
			const body = {
				label,
				ipxeBiosId: ipxes!.bios.id,
				ipxeUefiId: ipxes!.uefi.id,
				...Object.fromEntries(ISO_PARTS.map((part) => [part.field, parts[part.field]!.id])),
				// The BIOS iPXE on the ISO runs this script (isolinux INITRD).
				script: embedded,
			};
			await buildAll([{ key: "iso", entity: "isos", label: `ISO "${label}"`, body }], setBuilds, signal);
		});

	const handToDistributor = () =>
		run("distributor", async () => {
			const id = distributorId ?? distributors.rows?.[0]?.id;
			if (!id) throw new Error("Pick a distributor.");
			await api(`/distributors/${id}`, {
				method: "PUT",
				json: { ipxePxeUefiUrl: ipxes!.uefi.url, ipxePxeBiosUrl: ipxes!.pxe.url, device, range, scriptUrl: mainscriptUrl },
			});
			setHandedTo(await api<Distributor>(`/distributors/${id}/status`, { method: "PUT", json: { on: true } }));
			await distributors.reload();
		});

	const iso = builds.iso?.row;
	return (
		<div class="deploy">
			<Section title="1. Mainscript — the menu booting hosts fetch" id="step-mainscript">
				<label for="mainscript-pick">Mainscript</label>
				<select id="mainscript-pick" value={String(choice)} onChange={(e) => pick(e.currentTarget.value)}>
					<option value="new">New mainscript…</option>
					{(mainscripts.rows ?? []).map((row) => (
						<option key={row.id} value={row.id}>
							#{row.id} {row.text.split("\n").find((line) => line && !line.startsWith("#!")) ?? ""}
						</option>
					))}
				</select>
				<label for="mainscript-text">iPXE script</label>
				<textarea id="mainscript-text" class="editor" rows={12} spellcheck={false} value={text} onInput={(e) => setText(e.currentTarget.value)} />
				<div class="actions">
					<button id="save-mainscript" onClick={saveMainscript}>
						{choice === "new" ? "Create mainscript" : `Save mainscript #${choice}`}
					</button>
					{mainscriptUrl && (
						<span id="mainscript-saved" class="ok">
							Mainscript #{mainscriptId} saved: hosts chain <code>{mainscriptUrl}</code>
						</span>
					)}
				</div>
				<ErrorBox error={errors.mainscript ?? mainscripts.error} />
			</Section>

			<Section title="2. iPXE bootloaders — chain to the mainscript" id="step-ipxe">
				{!mainscriptId && <p class="muted">Create or save a mainscript first.</p>}
				<label for="ipxe-script">Embedded script</label>
				<textarea id="ipxe-script" class="editor" rows={4} spellcheck={false} value={embedded} disabled={!mainscriptId} onInput={(e) => setEmbedded(e.currentTarget.value)} />
				<div class="actions">
					<button id="build-ipxe" disabled={!mainscriptId || busy !== null} onClick={buildIpxe}>
						Build iPXE (BIOS + UEFI)
					</button>
				</div>
				<Builds builds={builds} only={IPXE_TARGETS.map((t) => t.key)} />
				{ipxes && ipxes.uefi.scriptDelivery ? <p class="note">UEFI: {String(ipxes.uefi.scriptDelivery)}</p> : null}
				<ErrorBox error={errors.ipxe} />
			</Section>

			<div class="two">
				<Section title="3a. ISO — for a CD, USB stick or virtual media" id="step-iso">
					<label for="iso-label">Volume label</label>
					<input id="iso-label" value={label} maxLength={32} onInput={(e) => setLabel(e.currentTarget.value)} />
					<div class="actions">
						<button id="build-iso" disabled={!ipxes || busy !== null} onClick={buildIso}>
							Build ISO
						</button>
					</div>
					<Builds builds={builds} only={[...ISO_PARTS.map((p) => p.field), "iso"]} />
					{iso?.status === "done" && iso.url && (
						<a id="download-iso" class="button" href={iso.url} download={`${label}.iso`}>
							Download the ISO
						</a>
					)}
					<ErrorBox error={errors.iso} />
				</Section>

				<Section title="3b. Distributor — PXE on the site's LAN" id="step-distributor">
					{distributors.error instanceof ApiError && distributors.error.status === 404 ? (
						<p class="muted">This provisioner runs no distributors service.</p>
					) : distributors.rows?.length === 0 ? (
						<p class="muted">
							No distributor has connected. Start one on the target LAN (<code>clusterplatform distributor</code> with <code>TRANSPORTER</code> pointing here); it
							appears here by itself.
						</p>
					) : (
						<>
							<label for="distributor-pick">Distributor</label>
							<select id="distributor-pick" value={String(distributorId ?? distributors.rows?.[0]?.id ?? "")} onChange={(e) => setDistributorId(Number(e.currentTarget.value))}>
								{(distributors.rows ?? []).map((d) => (
									<option key={d.id} value={d.id}>
										#{d.id} {d.artifactId} — {d.online ? "online" : "offline"}, {d.state}
									</option>
								))}
							</select>
							<label for="distributor-device">LAN interface</label>
							<input id="distributor-device" value={device} onInput={(e) => setDevice(e.currentTarget.value)} />
							<label for="distributor-range">LAN address (proxy-DHCP range)</label>
							<input id="distributor-range" placeholder="192.0.2.0" value={range} onInput={(e) => setRange(e.currentTarget.value)} />
							<div class="actions">
								<button id="hand-to-distributor" disabled={!ipxes || busy !== null} onClick={handToDistributor}>
									Configure and turn on
								</button>
							</div>
							{handedTo && (
								<p class="ok">
									Distributor #{handedTo.id}: {handedTo.state}
									{handedTo.stateReason ? ` (${handedTo.stateReason})` : ""}
								</p>
							)}
						</>
					)}
					<ErrorBox error={errors.distributor ?? (distributors.error instanceof ApiError && distributors.error.status === 404 ? null : distributors.error)} />
				</Section>
			</div>
		</div>
	);
}
