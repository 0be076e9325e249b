import { describe, expect, it } from 'vitest';
import { IllegalTransitionError, PageState, PageTable } from '../lib/pager/page-table';
import { parseSize } from '../lib/units';

describe('PageTable', () => {
  it('walks the life of a page through legal transitions and keeps counts', () => {
    const table = new PageTable(1, 4);
    table.move(0, PageState.Dirty); // a first write: zero-filled writable page
    table.move(0, PageState.Evicting); // write-back in flight
    table.move(0, PageState.Remote); // acknowledged
    table.move(0, PageState.Fetching);
    table.move(0, PageState.Clean);
    table.move(0, PageState.Dirty);
    table.move(1, PageState.ZeroMapped);
    expect(table.count(PageState.Dirty)).toBe(1);
    expect(table.count(PageState.ZeroMapped)).toBe(1);
    expect(table.count(PageState.Untouched)).toBe(2);
  });

  it('refuses an illegal move and names the page and both states', () => {
    const table = new PageTable(7, 4);
    expect(() => table.move(3, PageState.Clean)).toThrow(IllegalTransitionError);
    expect(() => table.move(3, PageState.Remote)).toThrow(/page 3 of region 7: illegal transition untouched -> remote/);
    table.move(2, PageState.ZeroMapped);
    expect(() => table.move(2, PageState.Fetching)).toThrow(/zero-mapped -> fetching/);
    expect(table.get(2)).toBe(PageState.ZeroMapped); // a refused move changes nothing
  });
});

describe('parseSize', () => {
  it('reads numbers and units', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize('256MiB')).toBe(256 * 1024 * 1024);
    expect(parseSize('4GiB')).toBe(4 * 1024 ** 3);
    expect(parseSize('1.5k')).toBe(1536);
    expect(parseSize('2MB')).toBe(2_000_000);
    expect(parseSize(' 10 ')).toBe(10);
  });

  it('throws FARMEM_INVALID_OPTION with an example on bad sizes', () => {
    for (const bad of ['12XB', '-1', 'lots', '', 1.5, -4, NaN, {}]) {
      expect(() => parseSize(bad, 'capacity')).toThrow(/capacity: expected .*256MiB/);
    }
  });
});
