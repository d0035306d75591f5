// REST routing metadata read by moleculer-web's autoAliases; declared here so every service
// package can use it without importing the gateway.
import "moleculer";

declare module "moleculer" {
	interface ActionSchema {
		rest?: string | string[] | Record<string, unknown> | null;
		/** The operation's summary in /api/openapi.json (the gateway reads it from the action). */
		description?: string;
	}
	interface ServiceSettingSchema {
		rest?: string | string[] | null;
		[setting: string]: unknown;
	}
}
