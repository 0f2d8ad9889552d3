/**
 * Regression (issue 14): search read all of a camera's gap records from its first one
 * for every query, so a camera with years of gaps paid for all of them on a search of
 * the last hour. Search, and the back-fill's view of a range, now read only the records
 * overlapping the range (a keyed range read: the one record that starts before the
 * range and reaches into it, then the records that start inside it).
 *
 * The records read are counted at the LMDB handle of the `gaps` database (a test-only
 * look inside RecorderIndex: the handle is private to index/).
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RecorderIndex } from '../../index/db.ts';
import type { GapRecord } from '../../index/records.ts';
import { search } from '../../index/search.ts';

const HOUR = 3600_000;
const OLD = Date.UTC(2020, 0, 1);
const T0 = Date.UTC(2026, 11, 1);
const OLD_GAPS = 5000;

/** Counts the records the index reads from its `gaps` database. */
function countGapReads(index: RecorderIndex): { read: number } {
  const counter = { read: 0 };
  const db = (index as unknown as { t: { gaps: { getRange(o: object): Iterable<unknown> } } }).t.gaps;
  const getRange = db.getRange.bind(db);
  db.getRange = (o: object): Iterable<unknown> => ({
    *[Symbol.iterator]() {
      for (const e of getRange(o)) {
        counter.read++;
        yield e;
      }
    },
  });
  return counter;
}

function gap(startMs: number, endMs: number | null, state: GapRecord['state'] = 'pending'): GapRecord {
  return { camera: 'c', startMs, endMs, state, reason: 'offline', attempts: 0 };
}

async function setup(t: import('ava').ExecutionContext): Promise<RecorderIndex> {
  const dir = mkdtempSync(join(tmpdir(), 'rec-gaps-'));
  const index = await RecorderIndex.open(dir);
  t.teardown(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const old = Array.from({ length: OLD_GAPS }, (_, i) => gap(OLD + i * HOUR, OLD + i * HOUR + 600_000, i % 2 ? 'unavailable' : 'filled'));
  await index.gaps.replace(
    'c',
    [],
    [
      ...old,
      gap(T0 - HOUR, T0 + 600_000), // reaches into the range from before it
      gap(T0 + HOUR, T0 + 2 * HOUR), // inside it
      gap(T0 + 3 * HOUR, null, 'open'), // still open at the end
    ],
  );
  // Another camera's records on both sides of c's keys.
  await index.gaps.replace('b', [], [{ ...gap(T0, T0 + HOUR), camera: 'b' }]);
  await index.gaps.replace('d', [], [{ ...gap(OLD, OLD + HOUR), camera: 'd' }]);
  return index;
}

test("search of a recent range reads only the gap records that overlap it, not the camera's history", async (t) => {
  const index = await setup(t);
  const reads = countGapReads(index);
  const r = search(index, { camera: 'c', fromMs: T0, toMs: T0 + 4 * HOUR, nowMs: T0 + 5 * HOUR });
  t.deepEqual(
    r.gaps.map((g) => [g.fromMs, g.toMs, g.state]),
    [
      [T0, T0 + 600_000, 'pending'],
      [T0 + HOUR, T0 + 2 * HOUR, 'pending'],
      [T0 + 3 * HOUR, T0 + 4 * HOUR, 'open'],
    ],
  );
  t.true(reads.read <= 5, `${reads.read} gap records read for a range that overlaps 3 (${OLD_GAPS + 3} stored)`);
});

test('the back-fill view of a range (closed records overlapping it) reads only those', async (t) => {
  const index = await setup(t);
  const reads = countGapReads(index);
  const closed = index.gaps.closedInRange('c', T0 + 300_000, T0 + 5 * HOUR);
  t.deepEqual(
    closed.map((g) => g.startMs),
    [T0 - HOUR, T0 + HOUR],
  );
  t.true(reads.read <= 5, `${reads.read} gap records read`);
  // The history is still there, and a range over it finds it.
  t.is(index.gaps.inRange('c', OLD, OLD + 10 * HOUR, T0).length, 10);
  t.deepEqual(
    index.gaps.inRange('c', OLD + 5 * 60_000, OLD + HOUR, T0).map((g) => g.startMs),
    [OLD],
    'the record that starts before the range',
  );
});
