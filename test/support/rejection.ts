/** The error `promise` rejects with, when it is a `kind`; a promise that resolves, or rejects otherwise, fails the test. */
export async function rejectionOf<E extends Error>(promise: Promise<unknown>, kind: abstract new (...args: never[]) => E): Promise<E> {
	const outcome = await promise.then(
		() => new Error(`resolved, but a ${kind.name} was expected`),
		(err: unknown) => err,
	);
	if (!(outcome instanceof kind)) throw outcome;
	return outcome;
}
