export * from "./settings";
export * from "./manager";
export * from "./server";
export * from "./client";
