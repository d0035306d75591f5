import path from "node:path";
import { ConfigError, loadConfig } from "@clusterplatform/core";

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
	])("refuses %j with a ConfigError naming the variable", (env, message) => {
		expect(() => loadConfig(env)).toThrow(ConfigError);
		expect(() => loadConfig(env)).toThrow(message);
	});
});
