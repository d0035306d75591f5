export * from "./dnsmasq";
export * from "./hosts";
export * from "./manager";
export * from "./worker";
