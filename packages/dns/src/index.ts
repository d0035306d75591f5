export * from "./dnsmasq";
export * from "./hosts";
export * from "./manager";
export * from "./site";
export * from "./worker";
