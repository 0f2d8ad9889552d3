/**
 * Storage lifecycle through the real interfaces: a real GStreamer camera pair, ffmpeg
 * ingest, segment files, LMDB, NATS and HTTP. A small `capacity` pool is driven over
 * its cap while a lock protects a range in the middle; usage is sampled all along.
 * Bad input (zero/negative capacity, a lock over no video, unlock of nothing, huge
 * label text, cycle without cycleDays, unknown pool) is tried against the same node.
 */
import test from 'ava';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SimCamera } from '../sim/camera.ts';
import { getJson, startNode, waitFor, type TestNode } from './helpers/recorder.ts';

interface SegInfo {
  camera: string;
  startMs: number;
  endMs: number;
  bytes: number;
  file: string;
}

function segments(n: TestNode): SegInfo[] {
  return [...n.node.index.segments.all()].map((s) => ({ camera: s.camera, startMs: s.startMs, endMs: s.endMs, bytes: s.bytes, file: s.file }));
}

async function poolBytesOnDisk(dataDir: string, pool: string): Promise<number> {
  let total = 0;
  const dir = join(dataDir, 'pools', pool);
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile()) continue;
    total += await stat(join(e.parentPath, e.name)).then(
      (s) => s.size,
      () => 0,
    );
  }
  return total;
}

const iso = (ms: number): string => new Date(ms).toISOString();

test('a capacity pool with 2 cameras stays within cap + one segment per camera, deletes oldest first, keeps a locked range until its lock expires', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { segmentSeconds: 2, retentionTickMs: 500 });
  const CAP = 400_000;
  const pool = await n.request<{ pool: { id: string; capacityBytes: number } }>('rec.v1.pool.put', {
    id: 'small',
    capacityBytes: CAP,
    overwrite: 'capacity',
    maxLockShare: 0.6,
  });
  t.true(pool.ok, JSON.stringify(pool));
  for (const id of ['a', 'b']) {
    const r = await n.request('rec.v1.camera.put', { id, pool: 'small', streams: { main: sim.url('h264') } });
    t.true(r.ok, JSON.stringify(r));
  }

  // Sample usage (index and disk) all along; remember every segment ever indexed.
  const seen = new Map<string, SegInfo>();
  let maxUsage = 0;
  let maxDisk = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      for (const s of segments(n)) seen.set(s.file, s);
      maxUsage = Math.max(maxUsage, n.node.index.segments.poolUsage('small'));
      maxDisk = Math.max(maxDisk, await poolBytesOnDisk(n.dataDir, 'small'));
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  t.teardown(async () => {
    sampling = false;
    await sampler;
  });

  // Lock a range of camera a early on, with an expiry well after the pool has wrapped.
  // Two ingests connecting, then ~8 s of media (a 2 s segment is indexed at its close):
  // a loaded machine gets more than waitFor's default 30 s for that.
  const early = await waitFor(
    '3 closed segments of a',
    () => {
      const segs = segments(n).filter((s) => s.camera === 'a');
      return segs.length >= 4 ? segs : null;
    },
    60_000,
  );
  const locked = early[1]!;
  const until = Date.now() + 25_000;
  const lock = await n.request<{ lock: { id: string; from: string; to: string; until: string } }>('rec.v1.lock', {
    camera: 'a',
    from: iso(locked.startMs + 100),
    to: iso(locked.endMs - 100),
    until: iso(until),
  });
  t.true(lock.ok, JSON.stringify(lock));

  // Wait until the pool has overwritten video on both sides of the lock.
  await waitFor(
    'segments before and after the locked one deleted',
    () => {
      const now = new Set(segments(n).map((s) => s.file));
      const older = early[0]!;
      const newer = early[2]!;
      return now.has(locked.file) && !now.has(older.file) && !now.has(newer.file) ? true : null;
    },
    60_000,
  );
  const search = await getJson<{ spans: { from: string; to: string; locks: { id: string }[] }[] }>(
    `${n.http}/api/recordings?camera=a&from=${iso(locked.startMs - 60_000)}&to=${iso(Date.now())}&locked=1`,
  );
  t.is(search.status, 200);
  t.is(search.body.spans.length, 1, 'locked=1 finds exactly the locked video');
  t.is(search.body.spans[0]!.locks[0]!.id, lock.lock.id);

  // After the lock expires, the next pass overwrites it.
  await waitFor('the expired lock released and its video overwritten', () => (segments(n).some((s) => s.file === locked.file) ? null : true), 60_000);
  t.true(Date.now() >= until, 'not deleted before the lock expired');

  sampling = false;
  await sampler;
  for (const s of segments(n)) seen.set(s.file, s);
  const maxSeg = Math.max(...[...seen.values()].map((s) => s.bytes));
  const bound = CAP + 2 * maxSeg;
  t.true(maxUsage <= bound, `index usage ${maxUsage} ≤ cap ${CAP} + 2 × ${maxSeg}`);
  // On disk there is also each file's init and the tail of each open segment not yet
  // indexed (up to RECORDER_SYNC_SECONDS of media, within the 2 × maxSeg above).
  t.true(maxDisk <= bound + 2 * 64 * 1024, `disk usage ${maxDisk} ≤ ${bound} + slack`);

  // Oldest first: every deleted unlocked segment started before every surviving one (across cameras).
  const remaining = new Set(segments(n).map((s) => s.file));
  const deleted = [...seen.values()].filter((s) => !remaining.has(s.file) && s.file !== locked.file);
  const kept = [...seen.values()].filter((s) => remaining.has(s.file));
  t.true(deleted.length > 5, `${deleted.length} segments were overwritten`);
  const newestDeleted = Math.max(...deleted.map((s) => s.startMs));
  const oldestKept = Math.min(...kept.map((s) => s.startMs));
  t.true(newestDeleted < oldestKept + 2500, `deleted up to ${iso(newestDeleted)}, kept from ${iso(oldestKept)}`);

  const pools = await getJson<{ pools: { id: string; usageBytes: number; deletedSegments: number }[] }>(`${n.http}/api/pools`);
  const small = pools.body.pools.find((p) => p.id === 'small')!;
  t.true(small.deletedSegments >= deleted.length);
  t.is(small.usageBytes, n.node.index.segments.poolUsage('small'));
});

test('storage bad input gets typed errors and changes nothing', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { segmentSeconds: 2 });
  const put = await n.request('rec.v1.camera.put', { id: 'c', streams: { main: sim.url('h264') } });
  t.true(put.ok);
  const code = (r: { ok: boolean; error?: { code: string } }): string | undefined => r.error?.code;

  // Pools: zero and negative capacities, cycle without days, unknown pool for a camera.
  t.is(code(await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: 0, overwrite: 'capacity' })), 'VALIDATION_FAILED');
  t.is(code(await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: -5, overwrite: 'capacity' })), 'VALIDATION_FAILED');
  t.is(code(await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: 1e6, overwrite: 'cycle' })), 'VALIDATION_FAILED');
  t.is(code(await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: 1e6, overwrite: 'capacity', backupDir: n.dataDir + '/x' })), 'VALIDATION_FAILED');
  t.is(code(await n.request('rec.v1.camera.put', { id: 'd', pool: 'nope', streams: { main: sim.url('h264') } })), 'POOL_NOT_FOUND');
  const list = await n.request<{ pools: { id: string }[] }>('rec.v1.pool.list', {});
  t.deepEqual(
    list.pools.map((p) => p.id),
    ['default'],
  );

  await waitFor('video', () => (segments(n).length >= 2 ? true : null));
  const now = Date.now();
  // A lock over no video, an inverted range, an expiry in the past, unlock of nothing.
  t.is(code(await n.request('rec.v1.lock', { camera: 'c', from: iso(now - 3600_000), to: iso(now - 3000_000) })), 'NO_VIDEO');
  t.is(code(await n.request('rec.v1.lock', { camera: 'c', from: iso(now), to: iso(now - 1000) })), 'BAD_TIME');
  t.is(code(await n.request('rec.v1.lock', { camera: 'c', from: iso(now - 5000), to: iso(now), until: iso(now - 1) })), 'VALIDATION_FAILED');
  t.is(code(await n.request('rec.v1.unlock', { camera: 'c', from: iso(now - 5000), to: iso(now) })), 'LOCK_NOT_FOUND');
  t.is(code(await n.request('rec.v1.unlock', { id: '6f1c3c2e-8f5e-4a53-9d51-1a2b3c4d5e6f' })), 'LOCK_NOT_FOUND');

  // Overlapping locks merge; unlocking the middle splits; HTTP DELETE by id works.
  const first = segments(n)[0]!;
  const l1 = await n.request<{ lock: { id: string } }>('rec.v1.lock', { camera: 'c', from: iso(first.startMs), to: iso(first.startMs + 1000) });
  const l2 = await n.request<{ lock: { id: string; from: string; to: string } }>('rec.v1.lock', {
    camera: 'c',
    from: iso(first.startMs + 500),
    to: iso(first.startMs + 1500),
  });
  t.true(l1.ok && l2.ok);
  t.is(l2.lock.from, iso(first.startMs));
  t.is(l2.lock.to, iso(first.startMs + 1500));
  const locks = await getJson<{ locks: unknown[] }>(`${n.http}/api/locks?camera=c`);
  t.is(locks.body.locks.length, 1, 'merged into one lock');
  const cut = await n.request<{ released: unknown[]; kept: { from: string; to: string }[] }>('rec.v1.unlock', {
    camera: 'c',
    from: iso(first.startMs + 600),
    to: iso(first.startMs + 700),
  });
  t.is(cut.kept.length, 2);
  for (const k of (await getJson<{ locks: { id: string }[] }>(`${n.http}/api/locks?camera=c`)).body.locks) {
    const res = await fetch(`${n.http}/api/locks/${k.id}`, { method: 'DELETE' });
    t.is(res.status, 200);
  }
  t.is((await getJson<{ locks: unknown[] }>(`${n.http}/api/locks?camera=c`)).body.locks.length, 0);

  // Labels: huge text refused; add, update, search by text, delete; shown by search.
  t.is(code(await n.request('rec.v1.label.add', { camera: 'c', from: iso(first.startMs), to: iso(first.endMs), text: 'x'.repeat(5000) })), 'VALIDATION_FAILED');
  t.is(code(await n.request('rec.v1.label.update', { id: '6f1c3c2e-8f5e-4a53-9d51-1a2b3c4d5e6f', text: 'y' })), 'LABEL_NOT_FOUND');
  const added = await n.request<{ label: { id: string } }>('rec.v1.label.add', {
    camera: 'c',
    from: iso(first.startMs),
    to: iso(first.endMs),
    text: 'Red van at the gate',
  });
  t.true(added.ok, JSON.stringify(added));
  const updated = await fetch(`${n.http}/api/labels/${added.label.id}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'Red van leaves the gate' }),
  });
  t.is(updated.status, 200);
  const found = await n.request<{ labels: { id: string; text: string }[] }>('rec.v1.label.search', { camera: 'c', text: 'VAN LEAVES' });
  t.deepEqual(
    found.labels.map((l) => l.text),
    ['Red van leaves the gate'],
  );
  const s = await getJson<{ spans: { labels: { text: string }[] }[] }>(
    `${n.http}/api/recordings?camera=c&from=${iso(first.startMs - 1000)}&to=${iso(Date.now())}&label=van`,
  );
  t.is(s.body.spans.length, 1);
  t.is(s.body.spans[0]!.labels[0]!.text, 'Red van leaves the gate');
  const del = await fetch(`${n.http}/api/labels/${added.label.id}`, { method: 'DELETE' });
  t.is(del.status, 200);
  t.is((await fetch(`${n.http}/api/labels/${added.label.id}`, { method: 'DELETE' })).status, 404);

  // None of it touched the video.
  t.true(segments(n).some((x) => x.file === first.file));
});
