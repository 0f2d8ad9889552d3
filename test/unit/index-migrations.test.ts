/**
 * Schema migrations (index/migrations/): an index written by each older layout opens,
 * is brought to SCHEMA_VERSION, and reads and writes as one written by this build.
 * The older indexes are written here with raw lmdb-js puts, as the older builds laid
 * them out (docs/design/index-layout.md "Schema versions"): schema 1 in each of the
 * layouts its builds wrote (no `segtimes`; `segtimes` but no `poolusage`; … ; all of
 * them), and schemas 2 to 4 as an upgrade interrupted after a migration committed
 * leaves them. An index of a newer build is refused and left as it was.
 */
import test from 'ava';
import { open, type RootDatabase } from 'lmdb';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RecorderIndex, SCHEMA_VERSION } from '../../index/db.ts';
import type { CameraConfig, LabelRecord, LockRecord, PoolPolicy, SegmentRecord } from '../../index/records.ts';
import { search } from '../../index/search.ts';

const HOUR = 3600_000;
const DAY = 24 * HOUR;
/** 20:00 UTC: camera a's ten hours cross midnight. */
const T0 = Date.UTC(2026, 11, 1, 20);

function segment(camera: string, pool: string, startMs: number, type: string, bytes: number): SegmentRecord {
  return {
    camera,
    startMs,
    endMs: startMs + HOUR,
    file: `pools/${pool}/${camera}/x/${startMs}.mp4`,
    format: 'mp4',
    pool,
    stream: 'main',
    bytes,
    initSize: 100,
    mimeType: 'video/mp4; codecs="avc1.4d401e"',
    codecKey: 'k',
    types: [{ type, fromMs: startMs }],
    gops: new Uint8Array(12),
    open: false,
    flags: {},
  };
}

/** Camera a: 10 h in pool p, `timing` then `event` from the sixth hour; camera b: 3 h in pool q. */
const SEGMENTS: SegmentRecord[] = [
  ...Array.from({ length: 10 }, (_, i) => segment('a', 'p', T0 + i * HOUR, i < 5 ? 'timing' : 'event', 1000 + i)),
  ...Array.from({ length: 3 }, (_, i) => segment('b', 'q', T0 + i * HOUR, 'timing', 500)),
];
const CAMERA: CameraConfig = { id: 'a', pool: 'p', streams: { main: 'rtsp://h/a' }, record: { stream: 'main' } };
const POOL: PoolPolicy = { id: 'p', capacityBytes: 1e9, overwrite: 'capacity', maxLockShare: 0.5 };
const LOCK: LockRecord = { id: 'L', camera: 'a', startMs: T0, endMs: T0 + HOUR, untilMs: null, createdMs: 0 };
const LABEL: LabelRecord = { id: 'lab', camera: 'a', startMs: T0, endMs: T0 + 1000, text: 'door', createdMs: 0, updatedMs: 0 };

/** Derived databases an older build may have kept (each appeared without a version bump in schema 1). */
type Derived = 'segtimes' | 'poolusage' | 'daysum';

/** `segtimes` value as builds since it existed wrote it: [endMs, type, fromMs, …]. */
function segtimesOf(s: SegmentRecord): (number | string)[] {
  return [s.endMs, ...s.types.flatMap((t) => [t.type, t.fromMs])];
}

/** `daysum` values as builds since it existed wrote them: per camera and UTC day, [fromMs, toMs, type, …]. */
function daysumsOf(segs: readonly SegmentRecord[]): Map<string, { key: [string, number]; runs: (number | string)[] }> {
  const out = new Map<string, { key: [string, number]; runs: (number | string)[] }>();
  for (const s of segs) {
    for (let day = Math.floor(s.startMs / DAY) * DAY; day < s.endMs; day += DAY) {
      const from = Math.max(s.startMs, day);
      const to = Math.min(s.endMs, day + DAY);
      const k = `${s.camera}/${day}`;
      const e = out.get(k) ?? { key: [s.camera, day], runs: [] };
      const n = e.runs.length;
      // Touching runs of one type are one run.
      if (n > 0 && e.runs[n - 2] === from && e.runs[n - 1] === s.types[0]!.type) e.runs[n - 2] = to;
      else e.runs.push(from, to, s.types[0]!.type);
      out.set(k, e);
    }
  }
  return out;
}

/** Writes an index as a build of `schema` with the derived databases `derived` laid it out. */
async function writeOldIndex(dataDir: string, schema: number, derived: readonly Derived[]): Promise<void> {
  const root: RootDatabase = open({ path: join(dataDir, 'index'), maxDbs: 32, mapSize: 1024 ** 3 });
  const meta = root.openDB<number | string, string>({ name: 'meta' });
  const segments = root.openDB<SegmentRecord, [string, number]>({ name: 'segments', sharedStructuresKey: Symbol.for('structures') });
  await meta.put('schema', schema);
  await meta.put('id', 'old-index');
  for (const s of SEGMENTS) void segments.put([s.camera, s.startMs], s);
  await root.openDB({ name: 'cameras' }).put('a', CAMERA);
  await root.openDB({ name: 'pools' }).put('p', POOL);
  await root.openDB({ name: 'locks' }).put(['a', LOCK.startMs], LOCK);
  await root.openDB({ name: 'labels' }).put(LABEL.id, LABEL);
  await root.openDB({ name: 'labelidx' }).put(['a', LABEL.startMs, LABEL.id], null);
  await root.openDB({ name: 'gaps' }).put(['a', T0 - HOUR], { camera: 'a', startMs: T0 - HOUR, endMs: T0, state: 'pending', reason: 'offline', attempts: 0 });
  if (derived.includes('segtimes')) {
    const db = root.openDB<(number | string)[], [string, number]>({ name: 'segtimes' });
    for (const s of SEGMENTS) void db.put([s.camera, s.startMs], segtimesOf(s));
  }
  if (derived.includes('poolusage')) {
    const db = root.openDB<number, string>({ name: 'poolusage' });
    void db.put(
      'p',
      SEGMENTS.filter((s) => s.pool === 'p').reduce((n, s) => n + s.bytes, 0),
    );
    void db.put('q', 1500);
  }
  if (derived.includes('daysum')) {
    const db = root.openDB<(number | string)[], [string, number]>({ name: 'daysum' });
    for (const { key, runs } of daysumsOf(SEGMENTS).values()) void db.put(key, runs);
  }
  await root.flushed;
  await root.close();
}

function tempData(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'rec-migrate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** What an index of this build answers for the data above, however it was written. */
async function assertCurrent(t: import('ava').ExecutionContext, index: RecorderIndex): Promise<void> {
  t.is(index.schemaVersion, SCHEMA_VERSION);
  t.is(index.id, 'old-index', 'identity kept (the config journal names it)');
  const usageP = SEGMENTS.filter((s) => s.pool === 'p').reduce((n, s) => n + s.bytes, 0);
  t.is(index.segments.poolUsage('p'), usageP);
  t.is(index.segments.poolUsage('q'), 1500);
  t.deepEqual(index.segments.poolCameras('p'), ['a']);
  t.deepEqual(index.segments.poolCameras('q'), ['b']);
  const r = search(index, { camera: 'a', fromMs: T0 - DAY, toMs: T0 + DAY, nowMs: T0 + DAY });
  t.deepEqual(r.spans, [
    {
      fromMs: T0,
      toMs: T0 + 10 * HOUR,
      types: [
        { type: 'timing', fromMs: T0, toMs: T0 + 5 * HOUR },
        { type: 'event', fromMs: T0 + 5 * HOUR, toMs: T0 + 10 * HOUR },
      ],
    },
  ]);
  t.deepEqual(
    r.gaps.map((g) => [g.fromMs, g.toMs, g.state]),
    [[T0 - HOUR, T0, 'pending']],
  );
  t.deepEqual(
    index.segments.timesInRange('b', T0, T0 + DAY).map((s) => [s.startMs, s.endMs]),
    [0, 1, 2].map((i) => [T0 + i * HOUR, T0 + (i + 1) * HOUR]),
  );
  const day2 = T0 + 4 * HOUR;
  t.deepEqual(
    index.segments.daySummary('a', day2),
    [
      { fromMs: day2, toMs: day2 + HOUR, type: 'timing' },
      { fromMs: day2 + HOUR, toMs: day2 + 6 * HOUR, type: 'event' },
    ],
    'the second UTC day',
  );
  t.deepEqual(index.cameras.get('a'), CAMERA);
  t.deepEqual(index.pools.get('p'), POOL);
  t.deepEqual(index.locks.ofCamera('a'), [LOCK]);
  t.deepEqual(index.labels.ofCameraBefore('a', T0 + DAY), [LABEL]);
  // And it goes on as a current index: a put moves usage, search and the day summary.
  await index.segments.put(segment('a', 'p', T0 + 10 * HOUR, 'event', 7));
  t.is(index.segments.poolUsage('p'), usageP + 7);
  await index.segments.put(segment('c', 'q', T0, 'timing', 9));
  t.deepEqual(index.segments.poolCameras('q'), ['b', 'c']);
  await index.segments.remove('c', T0);
  t.deepEqual(index.segments.poolCameras('q'), ['b'], 'a camera without video in the pool leaves it');
  t.is(search(index, { camera: 'a', fromMs: T0, toMs: T0 + DAY, nowMs: T0 + DAY }).spans[0]!.toMs, T0 + 11 * HOUR);
}

const OLDER: { name: string; schema: number; derived: Derived[]; applied: number[] }[] = [
  { name: 'schema 1 as first written (no segtimes, poolusage, daysum)', schema: 1, derived: [], applied: [2, 3, 4, 5] },
  { name: 'schema 1 with segtimes', schema: 1, derived: ['segtimes'], applied: [2, 3, 4, 5] },
  { name: 'schema 1 with segtimes and poolusage', schema: 1, derived: ['segtimes', 'poolusage'], applied: [2, 3, 4, 5] },
  { name: 'schema 1 as the last build of it wrote it (all three)', schema: 1, derived: ['segtimes', 'poolusage', 'daysum'], applied: [2, 3, 4, 5] },
  { name: 'schema 2 (an upgrade cut after migration 2)', schema: 2, derived: ['segtimes'], applied: [3, 4, 5] },
  { name: 'schema 3 (an upgrade cut after migration 3)', schema: 3, derived: ['segtimes', 'poolusage'], applied: [4, 5] },
  { name: 'schema 4 (as builds before poolcameras wrote it)', schema: 4, derived: ['segtimes', 'poolusage', 'daysum'], applied: [5] },
];

for (const older of OLDER) {
  test(`an index of ${older.name} opens at schema ${SCHEMA_VERSION} and reads and writes as a current one`, async (t) => {
    const dataDir = tempData(t);
    await writeOldIndex(dataDir, older.schema, older.derived);
    const index = await RecorderIndex.open(dataDir);
    t.teardown(() => index.close());
    t.deepEqual(
      index.migrations.applied.map((a) => Number(a.split(':')[0])),
      older.applied.filter((v) => v <= SCHEMA_VERSION),
    );
    t.is(index.migrations.from, older.schema);
    await assertCurrent(t, index);
    await index.close();
    const again = await RecorderIndex.open(dataDir);
    t.teardown(() => again.close());
    t.deepEqual(again.migrations.applied, [], 'migrated once');
    t.is(again.segments.poolUsage('p'), index.segments.poolUsage('p'));
  });
}

test('a new index starts at the current schema with nothing to migrate', async (t) => {
  const dataDir = tempData(t);
  const index = await RecorderIndex.open(dataDir);
  t.teardown(() => index.close());
  t.is(index.schemaVersion, SCHEMA_VERSION);
  t.deepEqual(index.migrations.applied, []);
});

test('an index of a newer build is refused (INDEX_SCHEMA_MISMATCH) and left as it was', async (t) => {
  const dataDir = tempData(t);
  await writeOldIndex(dataDir, SCHEMA_VERSION + 1, []);
  const file = join(dataDir, 'index', 'data.mdb');
  const before = readFileSync(file);
  await t.throwsAsync(RecorderIndex.open(dataDir), {
    code: 'INDEX_SCHEMA_MISMATCH',
    message: new RegExp(`index schema ${SCHEMA_VERSION + 1}, this build reads ${SCHEMA_VERSION}`),
  } as never);
  t.true(readFileSync(file).equals(before), 'not a byte changed');
});
