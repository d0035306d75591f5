/**
 * Token buckets per key (e.g. a client address): `burst` at once, then `perSecond`. The map is
 * bounded: past `maxKeys` the oldest bucket goes, so a flood of sources costs no unbounded memory.
 */
export class RateLimiter {
	private readonly buckets = new Map<string, { tokens: number; at: number }>();

	constructor(
		private readonly burst: number,
		private readonly perSecond: number,
		private readonly maxKeys = 10_000,
	) {}

	/** Take one token for `key`: 0 when granted, else the seconds until one is there. */
	take(key: string, now = Date.now()): number {
		const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
		bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
		bucket.at = now;
		this.buckets.delete(key);
		this.buckets.set(key, bucket);
		if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
		if (bucket.tokens >= 1) {
			bucket.tokens -= 1;
			return 0;
		}
		return Math.ceil((1 - bucket.tokens) / this.perSecond);
	}
}
