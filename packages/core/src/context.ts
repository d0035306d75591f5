import type { ServiceBroker } from "moleculer";
import type { Config } from "./config";

/** The configuration a broker was created with; services read it from here, not from globals. */
const configs = new WeakMap<ServiceBroker, Config>();

export function bindConfig(broker: ServiceBroker, config: Config): void {
	configs.set(broker, config);
}

/**
 * The broker's Config. A broker made without one (not by createBroker, nor given one with
 * bindConfig) is a mistake in the caller, not a reason to read the environment behind its back.
 */
export function configOf(broker: ServiceBroker): Config {
	const config = configs.get(broker);
	if (!config) throw new Error(`broker ${broker.nodeID} has no Config: create it with createBroker(config), or bindConfig(broker, config) first`);
	return config;
}
