// farmem: far memory for Node.js. Regions are ArrayBuffers whose pages live on memory nodes.
export { FarMemory, Region, attachRegion } from './far-memory';
export type { FarMemoryOptions, AllocateOptions, RegionHandle, FarMemoryStats } from './far-memory';
export { MemoryNode } from './memory-node';
export type { MemoryNodeOptions, MemoryNodeStats } from './memory-node';
export { FarmemError } from './errors';
export type { FarmemErrorCode } from './errors';
export { capabilities } from './native';
export type { Capabilities } from './native';
export type { RegionStats } from './stats';
export type { PrefetchPolicy, FaultEvent, PrefetchRanges } from './policies';
export { parseSize, formatBytes } from './units';
export { PAGE_SIZE } from './protocol';
