import type { ServiceSchema, ServiceSettingSchema } from "moleculer";

/**
 * A mixin typed against the host it expects: in its methods, actions, events, hooks and lifecycle
 * handlers `this` is `Service<Settings> & Vars & Methods`, where `Methods` names both the methods
 * the mixin brings and those it needs from its host (e.g. job rows need `applyCompleted`), and
 * `Vars` the state it keeps on the service. Moleculer merges mixins untyped
 * (`mixins: Partial<ServiceSchema>[]`), so the contract is checked where a mixin is written; the
 * typed schema is then handed over as a plain one.
 */
export function defineMixin<Methods, Vars = object, Settings = ServiceSettingSchema>(schema: Partial<ServiceSchema<Settings, Methods, Vars>>): Partial<ServiceSchema> {
	return schema as Partial<ServiceSchema>;
}

/** A service typed like a mixin (see defineMixin): `this` knows what its mixins provide. */
export function defineService<Methods, Vars = object, Settings = ServiceSettingSchema>(schema: ServiceSchema<Settings, Methods, Vars>): ServiceSchema {
	return schema as unknown as ServiceSchema;
}
