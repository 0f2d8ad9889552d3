/**
 * The storage supervisor follows the node's shutdown signal (lib/lifecycle.ts): once
 * the node stops, no backup audit, picture cover or retention pass starts, even before
 * the supervisor's own stop() is reached in the reverse-order shutdown.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorageSupervisor, type PictureCover } from '../../actors/storage-supervisor.ts';
import { RecorderIndex } from '../../index/db.ts';
import { silentLogger } from '../../lib/log.ts';

test("the node's shutdown signal stops the storage supervisor's work before its stop() runs", async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'storage-shutdown-'));
  const index = await RecorderIndex.open(dataDir);
  t.teardown(async () => {
    await index.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  await index.pools.put('bk', { id: 'bk', capacityBytes: null, overwrite: 'capacity', maxLockShare: 0.5, backupDir: join(dataDir, '..', 'bk-copies') });
  const node = new AbortController();
  const storage = new StorageSupervisor({
    index,
    dataDir,
    clock: { nowMs: () => Date.UTC(2026, 11, 1) },
    log: silentLogger,
    raiseAlarm: () => undefined,
    onPoolBlocked: () => undefined,
    tickMs: 3_600_000,
    minFreeBytes: 0,
    minFreeRatio: 0,
    backupAuditMs: 3_600_000,
    signal: node.signal,
  });
  const covered: number[] = [];
  const pictures: PictureCover = {
    cover: (_pools, nowMs) => {
      covered.push(nowMs);
      return Promise.resolve();
    },
    oldestPackMs: () => null,
    coverOldest: () => Promise.resolve(0),
    poolBytes: () => 0,
  };
  storage.attachPictures(pictures);
  await storage.coverPictures();
  t.is(covered.length, 1, 'covers while the node runs');

  node.abort();
  await storage.coverPictures();
  t.is(covered.length, 1, 'no cover once the node stops');
  t.is(await storage.auditBackups(), 0, 'no audit once the node stops');
  await storage.stop();
});
