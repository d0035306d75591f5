import { couldMatchSame, matchedOn, ranks, specificity } from "../src/specificity";
import { bareObject, missingValues, render, templateProblem } from "../src/templates";
import { parseCsv } from "../src/csv";

describe("machines: the rules without a broker", () => {
	it("ranks identity over labels over site over hardware", () => {
		const byMac = specificity({ mac: "52:54:00:00:00:01" });
		const threeLabels = specificity({ labels: { a: "1", b: "2", c: "3" }, artifactId: "s", arch: "x86_64", firmware: "uefi" });
		const twoLabels = specificity({ labels: { a: "1", b: "2" }, artifactId: "s", arch: "x86_64", firmware: "uefi" });
		const site = specificity({ artifactId: "s" });
		const hardware = specificity({ arch: "x86_64", firmware: "uefi" });
		expect(byMac).toBeGreaterThan(threeLabels);
		expect(threeLabels).toBeGreaterThan(twoLabels);
		expect(twoLabels).toBeGreaterThan(site);
		expect(site).toBeGreaterThan(hardware);
		expect(ranks({ mac: "x", uuid: "y", labels: { a: "1" } })).toEqual([2, 1, 0, 0]);
	});

	it("knows which selectors could match one machine", () => {
		expect(couldMatchSame({ arch: "x86_64" }, { firmware: "uefi" })).toBe(true);
		expect(couldMatchSame({ arch: "x86_64" }, { arch: "arm64" })).toBe(false);
		expect(couldMatchSame({ labels: { rack: "r1" } }, { labels: { rack: "r2" } })).toBe(false);
		expect(couldMatchSame({ labels: { rack: "r1" } }, { labels: { role: "db" } })).toBe(true);
		expect(couldMatchSame({ mac: "a" }, { mac: "b" })).toBe(false);
		expect(couldMatchSame({ mac: "a" }, { mac: "b" }, true)).toBe(true);
		expect(couldMatchSame({ mac: "a" }, { uuid: "u" })).toBe(true);
		const machine = { macs: ["a", "b"], arch: "x86_64", labels: { rack: "r1" } };
		expect(matchedOn({ mac: "b", labels: { rack: "r1" } }, machine)).toEqual(["mac b", "label rack=r1"]);
		expect(matchedOn({ labels: { rack: "r2" } }, machine)).toBeNull();
		expect(matchedOn({ firmware: "uefi" }, machine)).toBeNull();
	});

	it("checks template names at write time and values at boot, and renders unescaped", () => {
		const scripts = new Set(["ipxeScript", "kickstart"] as const);
		expect(templateProblem("ipxeScript", "#!ipxe\nkernel {{k}} ks={{kickstartUrl}} {{labels.rack}}", { k: "x" }, scripts)).toBeNull();
		expect(templateProblem("ipxeScript", "#!ipxe {{constructor}}", {}, scripts)).toMatch(/constructor/);
		expect(templateProblem("ipxeScript", "#!ipxe {{labels}}", {}, scripts)).toMatch(/labels.<key>/);
		const view = bareObject({ name: "n1", hostname: null, labels: bareObject({ rack: "r1" }), args: "a=1&b=<2>" });
		expect(missingValues("{{name}} {{hostname}} {{labels.zone}} {{#hostname}}{{serial}}{{/hostname}}", view)).toEqual(["hostname", "labels.zone"]);
		expect(render("{{args}} {{labels.rack}} {{labels.constructor}}", view)).toBe("a=1&b=<2> r1 ");
	});

	it("reads CSV with quotes, and names the line of a malformed one", () => {
		const { header, records } = parseCsv('name,macs,labels\r\n"a, b",aa:bb:cc:00:00:01,"rack=r1;note=say ""hi"""\n\nc,aa:bb:cc:00:00:02,\n', 10);
		expect(header).toEqual(["name", "macs", "labels"]);
		expect(records).toEqual([
			{ line: 2, cells: { name: "a, b", macs: "aa:bb:cc:00:00:01", labels: 'rack=r1;note=say "hi"' } },
			{ line: 4, cells: { name: "c", macs: "aa:bb:cc:00:00:02" } },
		]);
		expect(() => parseCsv('name\n"open', 10)).toThrow(/line 2/);
		expect(() => parseCsv("name\na,b", 10)).toThrow(/line 2 has 2 fields/);
	});
});
