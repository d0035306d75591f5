import { hostProblem, isPublicAddress, resolveCheckedHost } from "@clusterplatform/core";

/** The outbound block-list (issue 13, finding 14): every range that can carry an internal address, in every spelling. */
describe("isPublicAddress", () => {
	it.each([
		// IPv4-mapped (::ffff:0:0/96): dotted, hex, uncompressed, upper case, leading zeros; public ones too.
		"::ffff:127.0.0.1", "::ffff:7f00:1", "::FFFF:7F00:0001", "0:0:0:0:0:ffff:7f00:1", "0000:0000:0000:0000:0000:ffff:127.0.0.1",
		"::ffff:10.0.0.5", "::ffff:a00:5", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "::ffff:0.0.0.0", "::ffff:8.8.8.8", "::ffff:808:808",
		// IPv4-translated (::ffff:0:0:0/96) and IPv4-compatible (::/96).
		"::ffff:0:7f00:1", "::ffff:0:127.0.0.1", "::127.0.0.1", "::7f00:1", "::a00:5",
		// NAT64: well-known (64:ff9b::/96) and local-use (64:ff9b:1::/48), in both spellings.
		"64:ff9b::7f00:1", "64:ff9b::127.0.0.1", "64:ff9b:1::a00:5", "64:ff9b:1:ffff::1", "64:FF9B:0001:0000::8.8.8.8",
		// Teredo (2001::/32), benchmarking (2001:2::/48), ORCHID (2001:10::/28), ORCHIDv2 (2001:20::/28): all in 2001::/23.
		"2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:2::1", "2001:10::1", "2001:1f::1", "2001:20::1",
		// 6to4 (2002::/16), unspecified, loopback, unique-local, link-local (with a zone), site-local, multicast, discard, documentation, SRv6.
		"2002:7f00:1::1", "::", "0:0:0:0:0:0:0:0", "::1", "0::1", "fd00::1", "fc00::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1",
		"100::1", "2001:db8::1", "3fff::1", "5f00::1",
		// IPv4: this network, private, CGNAT, loopback, link-local, IETF, documentation, 6to4 relay, benchmarking, multicast, reserved, broadcast.
		"0.0.0.0", "0.1.2.3", "10.0.0.5", "100.64.0.1", "127.0.0.1", "127.255.255.254", "169.254.169.254", "172.16.0.1", "172.31.255.255",
		"192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.51.100.1", "203.0.113.1", "224.0.0.1", "240.0.0.1", "255.255.255.255",
		// Not addresses at all.
		"not-an-ip", "", "127.1", "0x7f000001", "2130706433",
	])("%s is not public", (address) => {
		expect(isPublicAddress(address)).toBe(false);
	});

	it.each(["8.8.8.8", "93.184.216.34", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888", "2001:200::1", "2a00:1450:4001:80b::200e"])(
		"%s is public (no range over-refused; an IPv6 rule never catches IPv4)",
		(address) => {
			expect(isPublicAddress(address)).toBe(true);
		},
	);
});

describe("hostProblem / resolveCheckedHost", () => {
	it.each(["::ffff:7f00:1", "::ffff:127.0.0.1", "64:ff9b:1::a00:5", "2001::1"])("refuses the literal %s, before any DNS", async (host) => {
		expect(hostProblem(host)).toMatch(/loopback, private or link-local/);
		await expect(resolveCheckedHost(host)).rejects.toThrow(/loopback, private or link-local/);
	});

	it("opens exactly what an operator allows", async () => {
		expect(hostProblem("::ffff:7f00:1", ["::ffff:7f00:1"])).toBeNull();
		expect(await resolveCheckedHost("127.0.0.1", ["127.0.0.1"])).toEqual({ address: "127.0.0.1", family: 4 });
		// Another spelling of an allowed address is not the allowed entry.
		await expect(resolveCheckedHost("::ffff:127.0.0.1", ["127.0.0.1"])).rejects.toThrow(/refused|loopback/);
	});
});
