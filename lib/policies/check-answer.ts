// Checks what a prefetch policy answered, once, for the pager and the replay alike: a misbehaving policy
// is told apart from one that merely names pages past the region's ends.
import { FarmemError } from '../errors';
import { MAX_ANSWER_PAGES } from './types';

function describe(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean' || value == null) return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  try {
    const json = JSON.stringify(value);
    return json === undefined ? typeof value : json.length > 60 ? `${json.slice(0, 57)}...` : json;
  } catch {
    return typeof value;
  }
}

function misbehaving(message: string, entry?: number): FarmemError {
  return new FarmemError('FARMEM_POLICY_ERROR', `prefetch policy answer: ${message}`, entry === undefined ? {} : { entry });
}

/**
 * Turns a policy's answer into [firstPage, count] ranges inside [0, regionPages): ranges reaching past
 * either end are clipped, ranges entirely outside are dropped, touching entries are merged. Throws
 * FARMEM_POLICY_ERROR for an answer that is not a list, an entry that is neither an integer page inside
 * the region nor an [integer, integer >= 0] pair, or more than MAX_ANSWER_PAGES pages named in all.
 * Allocates per entry, never per page.
 */
export function checkAnswer(answer: unknown, regionPages: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  if (answer === null || answer === undefined) return ranges;
  if (!Array.isArray(answer)) {
    throw misbehaving(`expected an array of pages and [firstPage, count] ranges, or null; got ${describe(answer)}`);
  }
  let named = 0;
  let last: [number, number] | null = null;
  for (let i = 0; i < answer.length; i++) {
    const entry: unknown = answer[i];
    let first: number;
    let end: number;
    if (typeof entry === 'number') {
      if (!Number.isInteger(entry) || entry < 0 || entry >= regionPages) {
        throw misbehaving(`entry ${i} is ${describe(entry)}: a single page must be an integer from 0 to ${regionPages - 1}`, i);
      }
      named += 1;
      first = entry;
      end = entry + 1;
    } else if (Array.isArray(entry) && entry.length === 2) {
      const [start, count] = entry as unknown[];
      if (typeof start !== 'number' || !Number.isSafeInteger(start) || typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) {
        throw misbehaving(`entry ${i} is ${describe(entry)}: a range must be [firstPage, count] with integer firstPage and integer count >= 0`, i);
      }
      named += count;
      first = Math.max(0, start);
      end = Math.min(regionPages, start + count);
    } else {
      throw misbehaving(`entry ${i} is ${describe(entry)}: expected a page index or a [firstPage, count] pair`, i);
    }
    // Checked as we go, so that a huge answer is refused without walking all of it.
    if (named > MAX_ANSWER_PAGES) {
      throw misbehaving(`names more than ${MAX_ANSWER_PAGES} pages (MAX_ANSWER_PAGES) in one answer; ask for fewer and more often`, i);
    }
    if (end <= first) continue; // entirely outside the region, or empty
    if (last !== null && last[0] + last[1] === first) {
      last[1] += end - first;
    } else {
      last = [first, end - first];
      ranges.push(last);
    }
  }
  return ranges;
}
