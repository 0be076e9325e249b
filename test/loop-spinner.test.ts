import { describe, expect, it } from 'vitest';
import { LoopSpinner } from '../lib/loop-spinner';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Whether `spinner` still polls two loop turns from now (a spin told to end ends at its next tick). */
async function activeAfterTwoTurns(spinner: LoopSpinner): Promise<boolean> {
  await nextTurn();
  await nextTurn();
  return spinner.active;
}

describe('LoopSpinner', () => {
  it('polls after a poke, stops at the next turn once settled, and polls again on the next poke', async () => {
    const spinner = new LoopSpinner(10_000);
    expect(spinner.active).toBe(false);
    spinner.poke();
    expect(spinner.active).toBe(true);
    spinner.settle();
    expect(await activeAfterTwoTurns(spinner)).toBe(false);
    spinner.poke();
    expect(spinner.active).toBe(true);
    spinner.stop();
    expect(await activeAfterTwoTurns(spinner)).toBe(false);
    spinner.poke(); // stopped: pokes do nothing
    expect(spinner.active).toBe(false);
  });

  it('never polls with 0 µs', () => {
    const spinner = new LoopSpinner(0);
    spinner.poke();
    expect(spinner.active).toBe(false);
  });
});
