export { MirrorsService } from "./manager";
export { MirrorsWorkerService, runMirrorJob, stagingDir, type MirrorJobData, type MirrorOutcome, type MirrorProgress } from "./worker";
export { parseSource, type MirrorSource, type SourceKind } from "./source";
export { parsePrimary, parseRepomd, safeHref } from "./repomd";
export { mirrorUrl, publishedLast } from "./layout";
export { rsyncArgs } from "./rsync-sync";
