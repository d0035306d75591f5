export * from "./catalogue";
export * from "./launcher";
export * from "./health";
