import path from "node:path";
import { ServiceBroker } from "moleculer";
import fs from "node:fs";
import os from "node:os";
import { CONFIG_VARIABLES, ConfigError, bindConfig, configOf, loadConfig } from "@clusterplatform/core";

describe("configuration from the environment", () => {
	it("has embedded defaults: port 3000, ./data, in-process transport, SQLite, private Redis, files", () => {
		const config = loadConfig({});
		expect(config).toMatchObject({
			port: 3000,
			publicUrl: "http://localhost:3000",
			dataDir: path.resolve("data"),
			transporter: null,
			databaseUrl: null,
			redisUrl: null,
			store: { kind: "files", root: path.resolve("data", "artifacts") },
		});
	});

	it("switches to the distributed stack by configuration only", () => {
		const config = loadConfig({
			TRANSPORTER: "nats://nats:4222",
			DATABASE_URL: "postgres://u:p@db/clusterplatform",
			REDIS_URL: "redis://redis:6379",
			S3_ENDPOINT: "minio",
			S3_ACCESS_KEY: "a",
			S3_SECRET_KEY: "b",
			S3_PUBLIC_URL: "http://203.0.113.7:30003/",
		});
		expect(config.transporter).toBe("nats://nats:4222");
		expect(config.store).toMatchObject({ kind: "s3", endPoint: "minio", port: 9000, bucket: "clusterplatform", publicUrl: "http://203.0.113.7:30003" });
	});

	it.each([
		[{ PORT: "70000" }, /PORT must be an integer/],
		[{ LOG_LEVEL: "loud" }, /LOG_LEVEL must be one of/],
		[{ TRANSPORTER: "tcp://x" }, /TRANSPORTER must be a nats:\/\/ or tls:\/\/ URL/],
		[{ S3_ENDPOINT: "minio" }, /S3_ACCESS_KEY and S3_SECRET_KEY are required/],
		[{ CLUSTERPLATFORM_DNS_NETNS: "lan; reboot" }, /CLUSTERPLATFORM_DNS_NETNS must be a network namespace name/],
		[{ IPXE_MAKE_JOBS: "2; rm -rf /" }, /IPXE_MAKE_JOBS must be an integer/],
	])("refuses %j with a ConfigError naming the variable", (env, message) => {
		expect(() => loadConfig(env)).toThrow(ConfigError);
		expect(() => loadConfig(env)).toThrow(message);
	});
});

describe("configOf", () => {
	it("answers the Config a broker was bound to, and refuses a broker that has none instead of reading the environment", () => {
		const unbound = new ServiceBroker({ logger: false, nodeID: "unbound" });
		expect(() => configOf(unbound)).toThrow(/broker unbound has no Config/);
		const config = loadConfig({ PORT: "3999" });
		bindConfig(unbound, config);
		expect(configOf(unbound)).toBe(config);
	});
});

describe("CONFIG_VARIABLES", () => {
	it("is exactly what loadConfig reads, over every branch", () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cpp-config-vars-"));
		try {
			const secret = path.join(dir, "secret");
			fs.writeFileSync(secret, "s3cret-from-a-file");
			const read = new Set<string>();
			const recording = (values: Record<string, string>) =>
				new Proxy(values, {
					get(target, name) {
						if (typeof name === "string") read.add(name);
						return Reflect.get(target, name);
					},
				});
			const common = { DATA_DIR: dir, MACHINE_PORT: "8080", S3_ENDPOINT: "minio", S3_ACCESS_KEY: "a", S3_SECRET_KEY: "b", TRANSPORTER: "tls://nats:4222", NATS_USER: "core", NATS_TLS_CA: secret };
			// Secrets given directly, then as files: the two ways read different names.
			loadConfig(recording({ ...common, NATS_PASSWORD: "p", SECRETS_KEY: "k".repeat(32) }));
			loadConfig(recording({ ...common, NATS_PASSWORD_FILE: secret, SECRETS_KEY_FILE: secret }));
			expect(CONFIG_VARIABLES.filter((name) => !read.has(name))).toEqual([]);
			expect([...read].filter((name) => /^[A-Z][A-Z0-9_]*$/.test(name) && !(CONFIG_VARIABLES as readonly string[]).includes(name))).toEqual([]);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});
});
