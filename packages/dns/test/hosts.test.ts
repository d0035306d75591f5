import { InvalidInputError } from "@clusterplatform/core";
import { checkDomain, checkUpstreams, isHostName, parseHosts, renderDnsConfig, renderHosts } from "../src";

describe("hosts syntax", () => {
	it("parses addresses and names, skipping comments and blank lines", () => {
		const entries = parseHosts("# c\n\n10.0.0.1 a.example b\r\n  fd00::1\tv6.example  # trailing\n");
		expect(entries).toEqual([
			{ address: "10.0.0.1", names: ["a.example", "b"] },
			{ address: "fd00::1", names: ["v6.example"] },
		]);
		expect(renderHosts(entries)).toBe("10.0.0.1 a.example b\nfd00::1 v6.example\n");
	});

	it.each([
		["999.1.1.1 a", "not an IPv4 or IPv6 address"],
		["10.0.0.1", "has no host name"],
		["10.0.0.1 -bad", "not a host name"],
		["10.0.0.1 a..b", "not a host name"],
		[`10.0.0.1 ${"a".repeat(64)}`, "not a host name"],
		["10.0.0.1 a\u0000b", "control"],
		["10.0.0.1 server=8.8.8.8", "not a host name"],
	])("rejects %j", (line, reason) => {
		try {
			parseHosts(`# first\n${line}\n`);
			throw new Error("accepted");
		} catch (err) {
			expect(err).toBeInstanceOf(InvalidInputError);
			expect((err as InvalidInputError).data).toEqual([expect.objectContaining({ field: "hosts", line: 2, message: expect.stringContaining(reason) })]);
		}
	});

	it("checks domains and upstreams", () => {
		expect(checkDomain("lan.example.")).toBe("lan.example");
		expect(() => checkDomain("lan/example")).toThrow(InvalidInputError);
		expect(() => checkUpstreams(["1.1.1.1", "x"])).toThrow("upstreams[1]");
		expect(isHostName("a-b.c")).toBe(true);
	});

	it("renders a DNS-only dnsmasq config", () => {
		const conf = renderDnsConfig({ domain: "lan.example", upstreams: ["1.1.1.1"], port: 5353 }, "/d/hosts");
		expect(conf.split("\n")).toEqual(expect.arrayContaining(["port=5353", "no-resolv", "local=/lan.example/", "addn-hosts=/d/hosts", "server=1.1.1.1", "log-queries"]));
		expect(conf).not.toMatch(/dhcp-range|enable-tftp/);
	});
});
