export * from "./catalogue";
export * from "./launcher";
