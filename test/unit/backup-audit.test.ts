/**
 * Regression (issue 14): the hourly backup audit loaded every segment of every camera
 * once per pool with a backup dir, whatever pool the cameras were in. It now reads
 * only the cameras that have segments in that pool (a keyed read of `poolcameras`),
 * each in batches, and holds no read transaction while it waits between them (for the
 * storage mutex, a copy): an idle snapshot would stop LMDB from reusing pages and grow
 * the index file with every commit meanwhile (issue 13).
 *
 * Records read are counted at the LMDB handle of the `segments` database (a test-only
 * look inside RecorderIndex: the handle is private to index/).
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { StorageSupervisor } from '../../actors/storage-supervisor.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';

const T0 = Date.UTC(2026, 11, 1);
const BACKED_UP = 600; // camera a, pool bk: more than two read batches
const ELSEWHERE = 3000; // cameras x and y, pool other (no backup dir)

function segment(camera: string, pool: string, i: number): SegmentRecord {
  const startMs = T0 + i * 10_000;
  return {
    camera,
    startMs,
    endMs: startMs + 10_000,
    file: `pools/${pool}/${camera}/2026-12-01/${startMs}.mp4`,
    format: 'mp4',
    pool,
    stream: 'main',
    bytes: 100,
    initSize: 0,
    mimeType: 'video/mp4',
    codecKey: 'k',
    types: [{ type: 'timing', fromMs: startMs }],
    gops: new Uint8Array(12),
    open: false,
    flags: {},
  };
}

/** Counts the records the index reads from its `segments` database. */
function countSegmentReads(index: RecorderIndex): { read: number } {
  const counter = { read: 0 };
  const db = (index as unknown as { t: { segments: { getRange(o: object): Iterable<unknown> } } }).t.segments;
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

test("the backup audit reads only the pool's cameras, in batches, holding no snapshot while it waits", async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'rec-audit-'));
  const backupDir = mkdtempSync(join(tmpdir(), 'rec-audit-bk-'));
  const index = await RecorderIndex.open(dataDir);
  let storage: StorageSupervisor | null = null;
  t.teardown(async () => {
    await storage?.stop();
    await index.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(backupDir, { recursive: true, force: true });
  });
  await index.pools.put('bk', { id: 'bk', capacityBytes: null, overwrite: 'capacity', maxLockShare: 0.5, backupDir });
  await index.pools.put('other', { id: 'other', capacityBytes: null, overwrite: 'capacity', maxLockShare: 0.5 });
  for (let i = 0; i < BACKED_UP; i++) {
    const seg = segment('a', 'bk', i);
    mkdirSync(dirname(join(dataDir, seg.file)), { recursive: true });
    writeFileSync(join(dataDir, seg.file), Buffer.alloc(seg.bytes, i % 256));
    void index.segments.put(seg);
  }
  for (let i = 0; i < ELSEWHERE; i++) for (const camera of ['x', 'y']) void index.segments.put(segment(camera, 'other', i));
  await index.segments.put(segment('z', 'other', 0));
  storage = new StorageSupervisor({
    index,
    dataDir,
    clock: { nowMs: () => T0 },
    log: silentLogger,
    raiseAlarm: () => undefined,
    onPoolBlocked: () => undefined,
    tickMs: 3_600_000,
    minFreeBytes: 0,
    minFreeRatio: 0,
    backupAuditMs: 3_600_000,
  });

  // The audit waits for the storage mutex at its first copy; meanwhile 300 commits.
  let release!: () => void;
  void storage.exclusive(() => new Promise<void>((r) => (release = r)));
  const reads = countSegmentReads(index);
  const audit = storage.auditBackups();
  const file = join(dataDir, 'index', 'data.mdb');
  const before = statSync(file).size;
  for (let i = 0; i < 300; i++)
    await index.pools.put('churn', { id: 'churn', capacityBytes: i, overwrite: 'capacity', maxLockShare: 0.5, backupDir: 'x'.repeat(2000 + (i % 7)) });
  const grown = statSync(file).size - before;
  release();
  t.is(await audit, BACKED_UP, 'every missing backup copy re-created');
  t.deepEqual(readFileSync(join(backupDir, segment('a', 'bk', 7).file)), Buffer.alloc(100, 7));

  t.true(reads.read <= BACKED_UP + 10, `${reads.read} segment records read for ${BACKED_UP} of the pool (${2 * ELSEWHERE + 1} of other pools)`);
  // Pinned, each commit would leave its copied pages behind (~300 × 2+ pages).
  t.true(grown < 600 * 1024, `the index grew by ${grown} bytes over 300 commits while the audit waited`);
  t.is(await storage.auditBackups(), 0, 'nothing left to do');
});
