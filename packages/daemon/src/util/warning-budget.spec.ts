import { describe, expect, it } from 'vitest';
import { WarningBudget } from './warning-budget.js';

describe('WarningBudget', () => {
  it('logs the first warnings clipped, counts the rest, and says how many once flushed', () => {
    const lines: string[] = [];
    const budget = new WarningBudget((message) => lines.push(message), 3, 24);
    for (let i = 0; i < 10_000; i++) budget.warn(`skipped '${'p'.repeat(i % 2 ? 3_000 : 1)}${i}': vanished`);
    budget.flush();
    expect(lines).toEqual([
      "skipped 'p0': vanished",
      `skipped '${'p'.repeat(15)}… (3021 characters)`,
      "skipped 'p2': vanished",
      '9997 more warnings like these were not logged',
    ]);
    budget.flush();
    expect(lines).toHaveLength(4);
  });
});
