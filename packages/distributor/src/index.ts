export * from "./boot-log";
export * from "./dnsmasq";
export * from "./download";
export * from "./manager";
export * from "./reach";
export * from "./ssh";
export * from "./validation";
export * from "./worker";
