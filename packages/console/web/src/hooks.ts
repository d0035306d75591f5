import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { listRows } from "./api";

/** Rows of an entity, reloaded every `refreshMs` while `refreshWhile(rows)` holds. */
export function useRows<T>(entity: string, refreshMs = 0, refreshWhile: (rows: T[]) => boolean = () => true) {
	const [rows, setRows] = useState<T[] | null>(null);
	const [error, setError] = useState<unknown>(null);
	const reload = useCallback(async () => {
		try {
			setRows(await listRows<T>(entity));
			setError(null);
		} catch (err) {
			setError(err);
		}
	}, [entity]);
	useEffect(() => {
		setRows(null);
		void reload();
	}, [reload]);
	const keepRefreshing = refreshMs > 0 && rows !== null && refreshWhile(rows);
	useEffect(() => {
		if (!keepRefreshing) return;
		const timer = setInterval(() => void reload(), refreshMs);
		return () => clearInterval(timer);
	}, [keepRefreshing, reload, refreshMs]);
	return { rows, error, reload };
}

/** An AbortSignal that fires when the component unmounts (stops pollers it started). */
export function useUnmountSignal(): AbortSignal {
	const controller = useRef(new AbortController());
	useEffect(() => () => controller.current.abort(), []);
	return controller.current.signal;
}
