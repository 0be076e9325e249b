// Option validation for the public API: defaults, types, ranges, and misspelled names.
import { FarmemError, invalidOption } from './errors';
import { parseSize } from './units';

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

/**
 * Throws FARMEM_INVALID_OPTION unless `options` is undefined or a plain object whose keys are all in
 * `known`; a near miss is named ("unknown option 'capacty' — did you mean 'capacity'?").
 */
export function checkOptionNames(options: unknown, known: readonly string[], what: string): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalidOption(what, options, 'an object of options or undefined');
  }
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue;
    let best = '';
    let bestDistance = Infinity;
    for (const candidate of known) {
      const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
      if (distance < bestDistance) {
        best = candidate;
        bestDistance = distance;
      }
    }
    const hint =
      bestDistance <= Math.max(2, Math.floor(best.length / 3))
        ? ` — did you mean '${best}'?`
        : ` — known options: ${known.join(', ')}`;
    throw new FarmemError('FARMEM_INVALID_OPTION', `unknown option '${name}' for ${what}${hint}`, { option: name });
  }
}

export function intOption(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(name, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

export function fractionOption(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value > 0 && value <= 1)) throw invalidOption(name, value, 'a number in (0, 1]');
  return value;
}

export function sizeOption(name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const bytes = parseSize(value, name);
  if (bytes < min) throw invalidOption(name, value, `at least ${min} bytes`);
  return bytes;
}

export function stringOption(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw invalidOption(name, value, 'a string');
  return value;
}

export interface ParsedAddress {
  host: string;
  port: number;
}

/** 'host:port', '[::1]:port', or { host, port }. */
export function parseNodeAddress(value: unknown, name = 'nodes'): ParsedAddress {
  if (typeof value === 'string') {
    const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value.trim());
    const port = match ? Number(match[3]) : NaN;
    if (match && port > 0 && port < 65536) return { host: match[1] ?? match[2], port };
  } else if (value && typeof value === 'object') {
    const { host, port } = value as { host?: unknown; port?: unknown };
    if (typeof host === 'string' && host.length > 0 && Number.isInteger(port) && (port as number) > 0 && (port as number) < 65536) {
      return { host, port: port as number };
    }
  }
  throw invalidOption(name, value, "'host:port' such as '127.0.0.1:7070', or { host, port }");
}
