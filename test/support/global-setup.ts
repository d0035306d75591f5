import { startPostgres } from "./servers";

/**
 * One PostgreSQL cluster for the whole run (each test file makes its own database in it). Its URL
 * reaches the test files through the environment; the teardown stops it.
 */
export default async function globalSetup(): Promise<void> {
	const postgres = await startPostgres();
	process.env.CPP_TEST_POSTGRES_URL = postgres.url;
	(globalThis as Record<string, unknown>).__cppPostgres = postgres;
}
