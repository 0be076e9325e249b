import { invalidOption } from './errors';

const UNITS: Record<string, number> = {
  b: 1,
  k: 1024, kb: 1000, kib: 1024,
  m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
};

/**
 * Parses a byte size: a non-negative safe integer, or a string such as '256MiB', '4GiB', '1.5g', '4096'.
 * Binary units (KiB, MiB, GiB, TiB and bare K, M, G, T) are powers of 1024; KB, MB, GB, TB are powers of 1000.
 */
export function parseSize(value: unknown, option = 'size'): number {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return value;
    throw invalidOption(option, value, 'a non-negative integer number of bytes or a string like "256MiB"');
  }
  if (typeof value === 'bigint' && value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  if (typeof value === 'string') {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
    const factor = match ? UNITS[(match[2] || 'b').toLowerCase()] : undefined;
    if (match && factor !== undefined) {
      const bytes = Math.round(Number(match[1]) * factor);
      if (Number.isSafeInteger(bytes)) return bytes;
    }
  }
  throw invalidOption(option, value, 'a size such as 1073741824, "256MiB", "4GiB" or "512KiB"');
}

/** Formats bytes with binary units for humans: 1536 -> '1.5 KiB'. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}
