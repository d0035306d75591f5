export default async function globalTeardown(): Promise<void> {
	const postgres = (globalThis as Record<string, { stop(): Promise<void> } | undefined>).__cppPostgres;
	await postgres?.stop();
}
