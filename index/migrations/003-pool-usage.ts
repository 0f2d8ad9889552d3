/**
 * Schema 3: `poolusage` poolId → bytes of the pool's indexed segments, kept in the same
 * commit as every segment put and remove, so retention reads a pool's usage without
 * summing its segments. Counted here once from the segments when a schema-1 index has
 * none (builds before it existed).
 */
import type { Migration } from './migration.ts';

export const poolUsageMigration: Migration = {
  version: 3,
  name: 'poolusage: bytes per pool',
  up(t) {
    if (t.poolusage.getKeysCount({ limit: 1 }) > 0) return;
    const usage = new Map<string, number>();
    for (const { value } of t.segments.getRange({})) usage.set(value.pool, (usage.get(value.pool) ?? 0) + value.bytes);
    for (const [pool, bytes] of usage) void t.poolusage.put(pool, bytes);
  },
};
