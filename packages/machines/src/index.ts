export { MachinesService, IMPORT_MAX, type MachineRow } from "./machines";
export { ProfilesService, type ProfileRow } from "./profiles";
export { SelectorsService, type Selection, type SelectorRow } from "./selectors";
export { SPECIFICITY_RULE, couldMatchSame, matchedOn, ranks, specificity, type Criteria } from "./specificity";
export { UNKNOWN_BOOT_CHOICES, embeddedChain, type UnknownBoot } from "./boot-scripts";
export { ARCHITECTURES, BMC_PROTOCOLS, FIRMWARES, MACHINE_STATUSES, type MachineStatus } from "./fields";
