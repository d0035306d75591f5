import { storeFor } from "@clusterplatform/core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startTestProvisioner } from "@clusterplatform/test-kit/provisioner";

describe("gateway shutdown", () => {
	it("cuts a download whose client stopped reading after the grace period instead of waiting for ever", async () => {
		const provisioner = await startTestProvisioner({ services: ["gateway"] });
		const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-shutdown-"));
		try {
			const big = path.join(scratch, "big.iso");
			fs.writeFileSync(big, Buffer.alloc(64 * 1024 * 1024, 1));
			const { url } = await storeFor(provisioner.config).putFile("test/big.iso", big);
			// A client that reads the headers and then nothing: 64 MiB do not fit in socket buffers.
			const stalled = await fetch(url);
			expect(stalled.status).toBe(200);
			const started = Date.now();
			await provisioner.stop();
			const took = Date.now() - started;
			console.log(`gateway stopped ${took} ms after stop() with a stalled download`);
			expect(took).toBeGreaterThanOrEqual(9_000);
			expect(took).toBeLessThan(20_000);
			await expect(stalled.arrayBuffer()).rejects.toThrow();
		} finally {
			fs.rmSync(scratch, { recursive: true, force: true });
		}
	}, 40_000);
});
