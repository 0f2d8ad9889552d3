/**
 * Regression (issue 12, "the recorder dies after ten minutes"): every retention pass
 * that stopped early left an LMDB range iterator open, pinning a read transaction and
 * a reader slot, until MDB_READERS_FULL (126 slots) killed the process. Thousands of
 * passes over a real LMDB index must leave the reader table as it was.
 */
import test from 'ava';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { StorageSupervisor } from '../../actors/storage-supervisor.ts';
import { RecorderIndex } from '../../index/db.ts';
import { oldestFirst } from '../../index/oldest-first.ts';
import type { SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';

const T0 = Date.UTC(2026, 11, 1);
const CAMERAS = ['a', 'b', 'c'];
const PER_CAMERA = 300; // more than one read batch per camera

function segment(camera: string, i: number): SegmentRecord {
  const startMs = T0 + i * 10_000 + CAMERAS.indexOf(camera);
  return {
    camera,
    startMs,
    endMs: startMs + 10_000,
    file: `pools/p/${camera}/2026-12-01/${startMs}.mp4`,
    format: 'mp4',
    pool: 'p',
    stream: 'main',
    bytes: 1000,
    initSize: 0,
    mimeType: 'video/mp4; codecs="avc1.4d401e"',
    codecKey: 'k',
    types: [{ type: 'timing', fromMs: startMs }],
    gops: new Uint8Array(0),
    open: false,
    flags: {},
  };
}

async function setup(t: import('ava').ExecutionContext): Promise<{ index: RecorderIndex; storage: StorageSupervisor; dataDir: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'rec-readers-'));
  const index = await RecorderIndex.open(dataDir);
  let storage: StorageSupervisor | null = null;
  t.teardown(async () => {
    await storage?.stop();
    await index.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  for (const camera of CAMERAS) {
    for (let i = 0; i < PER_CAMERA; i++) {
      const seg = segment(camera, i);
      mkdirSync(dirname(join(dataDir, seg.file)), { recursive: true });
      writeFileSync(join(dataDir, seg.file), Buffer.alloc(seg.bytes));
      void index.segments.put(seg);
    }
  }
  await index.segments.put(segment('a', PER_CAMERA)); // the last put resolves after all before it
  storage = new StorageSupervisor({
    index,
    dataDir,
    clock: { nowMs: () => T0 + PER_CAMERA * 10_000 + 60_000 },
    log: silentLogger,
    raiseAlarm: () => undefined,
    onPoolBlocked: () => undefined,
    tickMs: 3_600_000,
    minFreeBytes: 0,
    minFreeRatio: 0,
    backupAuditMs: 3_600_000,
  });
  return { index, storage, dataDir };
}

test('thousands of retention passes that stop early leave the LMDB reader slots flat', async (t) => {
  const { index, storage } = await setup(t);
  const usage = index.segments.poolUsage('p');
  // Under capacity: every pass reads the oldest segment of each camera and stops there.
  await index.pools.put('p', { id: 'p', capacityBytes: usage + 1, overwrite: 'capacity', maxLockShare: 0.5, thinAfterDays: 3650 });
  const before = index.readerSlots();
  for (let i = 0; i < 3000; i++) {
    await storage.retentionPass('p');
    // Commits between passes are what made lmdb-js open a fresh read transaction each time.
    if (i % 100 === 0) await index.pools.put('p', { id: 'p', capacityBytes: usage + 1 + i, overwrite: 'capacity', maxLockShare: 0.5, thinAfterDays: 3650 });
  }
  t.true(index.readerSlots() <= Math.max(before, 1), `reader slots ${before} → ${index.readerSlots()}`);
  t.is(index.segments.poolUsage('p'), usage, 'nothing deleted under capacity');

  // Over capacity: passes delete, and still hold nothing afterwards.
  await index.pools.put('p', { id: 'p', capacityBytes: usage / 2, overwrite: 'capacity', maxLockShare: 0.5 });
  await storage.retentionPass('p');
  t.true(index.segments.poolUsage('p') <= usage / 2);
  for (let i = 0; i < 200; i++) await storage.retentionPass('p');
  t.true(index.readerSlots() <= Math.max(before, 1), `reader slots after deleting: ${index.readerSlots()}`);
});

test('a walk abandoned mid-way, without closing it, pins no reader slot', async (t) => {
  const { index } = await setup(t);
  const before = index.readerSlots();
  for (let i = 0; i < 500; i++) {
    const walk = oldestFirst(index, () => true);
    walk.next(); // then dropped on the floor, as a careless caller would
    const camera = index.segments.all('b')[Symbol.iterator]();
    camera.next();
    await index.pools.put('p', { id: 'p', capacityBytes: i, overwrite: 'capacity', maxLockShare: 0.5 });
  }
  t.true(index.readerSlots() <= Math.max(before, 1), `reader slots ${before} → ${index.readerSlots()}`);
});
