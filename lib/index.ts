// farmem: far memory for Node.js. Regions are ArrayBuffers whose pages live on memory nodes.
export { FarMemory, Region, attachRegion } from './far-memory';
export type {
  FarMemoryOptions,
  AllocateOptions,
  RegionHandle,
  FarMemoryStats,
  PolicyModule,
  GuideModule,
  Advice,
  PolicyReport,
  RegionTrace,
} from './far-memory';
export type { GuideFunction, GuideInfo } from './pager/policy-host';
export { MemoryNode } from './memory-node';
export { Coffer } from './coffer/host';
export type { CofferOptions, CofferExit, CofferExitReason, CofferStats } from './coffer/host';
export { CofferError } from './coffer/messages';
export type { MemoryNodeOptions, MemoryNodeStats } from './memory-node';
export { FarmemError } from './errors';
export type { FarmemErrorCode } from './errors';
export { capabilities } from './native';
export type { Capabilities } from './native';
export type { RegionStats, PrefetchAccounting } from './stats';
export type { PrefetchPolicy, FaultEvent, PrefetchRanges } from './policies';
export { parseSize, formatBytes } from './units';
export { PAGE_SIZE } from './protocol';
export type { PrefetchAnswer, PolicyContext, PolicyFactory, ReadaheadOptions, StrideOptions, LeapOptions, HistoryOptions, BuiltinPolicy } from './policies';
export { BUILTIN_POLICIES, MAX_ANSWER_PAGES, createPolicy, checkAnswer, NoPrefetch, ReadaheadPolicy, StridePolicy, LeapPolicy, HistoryPolicy } from './policies';
export type { TraceHeader, Trace, TraceFromPagesOptions } from './trace-file';
export {
  TRACE_RECORD_BYTES,
  TRACE_FLAG_WRITE,
  TRACE_FLAG_PREFETCH_HIT,
  TRACE_FLAG_FIRST_TOUCH,
  encodeTraceHeader,
  writeTraceRecord,
  parseTrace,
  readTrace,
  traceFromPages,
} from './trace-file';
export type { SimulateOptions, ReplayOptions, ReplayResult, ReplayRow } from './replay';
export { simulate, replayPolicies } from './replay';
