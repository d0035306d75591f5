/** MACs of its own for each call (`52:54:00:<prefix>:…`), so a suite's machines never collide. */
export function macSequence(prefix: string): () => string {
	let counter = 0;
	return () => {
		counter++;
		return `52:54:00:${prefix}:${(counter >> 8).toString(16).padStart(2, "0")}:${(counter & 255).toString(16).padStart(2, "0")}`;
	};
}
