import net from "node:net";

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

/** What a client is counted as: an IPv4 address, or an IPv6 /64 (one host may hold a whole /64). */
export function rateKeyOf(address: string | null | undefined): string {
	const bare = address?.split("%")[0];
	if (!bare || !net.isIPv6(bare)) return address ?? "unknown";
	const [head, tail] = bare.split("::") as [string, string | undefined];
	const left = head ? head.split(":") : [];
	const right = tail ? tail.split(":") : [];
	const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
	return `${groups.slice(0, 4).map((g) => parseInt(g || "0", 16).toString(16)).join(":")}::/64`;
}
