import type { ServiceBroker } from "moleculer";
import { loadConfig, type Config } from "./config";

/** The configuration a broker was created with; services read it from here, not from globals. */
const configs = new WeakMap<ServiceBroker, Config>();

export function bindConfig(broker: ServiceBroker, config: Config): void {
	configs.set(broker, config);
}

export function configOf(broker: ServiceBroker): Config {
	let config = configs.get(broker);
	if (!config) {
		config = loadConfig();
		configs.set(broker, config);
	}
	return config;
}
