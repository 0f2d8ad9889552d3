/**
 * Regression (issue 14): a camera purge (`camera.delete` with `purge`) bypassed the
 * crash-safe deletion that retention uses. It recorded no delete intent (a crash
 * between removing an entry and unlinking its file left the file, and reconcile
 * indexed the purged video again), left the pool's backup copies on disk, and ran
 * outside the storage mutex (racing retention on the pool's usage). Now the camera's
 * records go with a `purge` intent in one commit, every segment goes through
 * storage/segment-delete.ts (intent, primary and backup copy, end of intent) under the
 * storage mutex, and a purge cut by a crash is finished at the next start.
 */
import test from 'ava';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SimCamera } from '../sim/camera.ts';
import { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { spawnRecorder, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Files under `dir` (recursively), relative names; none when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

function closedSegments(n: TestNode, camera: string): SegmentRecord[] {
  return [...n.node.index.segments.all(camera)].filter((s) => !s.open);
}

async function put(http: string, path: string, body: unknown): Promise<void> {
  const res = await fetch(`${http}${path}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`);
}

test('a purge deletes primary and backup copies, waits for the storage mutex, and leaves no intent', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const backupDir = await tempDir(t, 'backup-');
  const n = await startNode(t, { segmentSeconds: 2 }, dataDir);
  t.true((await n.request('rec.v1.pool.put', { id: 'mirrored', capacityBytes: null, overwrite: 'capacity', backupDir })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'c', pool: 'mirrored', streams: { main: sim.url('h264') } })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'other', pool: 'mirrored', streams: { main: sim.url('h264') } })).ok);
  await waitFor(
    '2 closed segments of c with backups',
    async () => {
      const s = closedSegments(n, 'c');
      if (s.length < 2) return null;
      for (const x of s) if (!(await exists(join(backupDir, x.file)))) return null;
      return s;
    },
    60_000,
  );

  // Retention (or anything else under the storage mutex) is busy: the purge waits for it.
  let release: (() => void) | undefined;
  let held: Promise<void> | undefined;
  await new Promise<void>((running) => {
    held = n.node.storage!.exclusive(
      () =>
        new Promise<void>((r) => {
          release = r;
          running();
        }),
    );
  });
  t.teardown(() => release?.());
  const purge = n.request<{ purged: number }>('rec.v1.camera.delete', { id: 'c', purge: true });
  await waitFor('camera c removed', () => n.node.index.cameras.get('c') === undefined);
  // The actor has stopped: what c has now is what the purge must delete.
  const segs = [...n.node.index.segments.all('c')];
  t.true(segs.length >= 2, `the purge waits for the storage mutex (${segs.length} segments of c left while it is held)`);
  const usage = n.node.index.segments.poolUsage('mirrored');
  t.true(
    segs.every((s) => n.node.index.segments.get('c', s.startMs) !== undefined),
    'nothing deleted while the mutex is held',
  );
  release!();
  await held;
  const reply = await purge;
  t.true(reply.ok, JSON.stringify(reply));
  t.is(reply.purged, segs.length);

  t.deepEqual([...n.node.index.segments.all('c')], [], 'no entry of c left');
  t.deepEqual(await filesUnder(join(dataDir, 'pools', 'mirrored', 'c')), [], 'no primary copy left');
  t.deepEqual(await filesUnder(join(backupDir, 'pools', 'mirrored', 'c')), [], 'no backup copy left');
  t.deepEqual(n.node.index.intents.list(), [], 'every intent finished');
  t.is(n.node.index.segments.poolUsage('mirrored'), usage - segs.reduce((sum, s) => sum + s.bytes, 0), "the pool's usage lost exactly c's bytes");
  t.true(closedSegments(n, 'other').length > 0, 'the other camera keeps its video');
});

test('kill -9 in the middle of a purge: the restart finishes it, and reconcile brings nothing back', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const backupDir = await tempDir(t, 'backup-');
  const env = { RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_SEGMENT_SECONDS: '2' };
  const first = spawnRecorder(t, { ...env, RECORDER_CRASH_POINT: 'delete.after-intent' });
  const http = await first.http;
  await put(http, '/api/pools/p', { capacityBytes: null, overwrite: 'capacity', backupDir });
  await put(http, '/api/cameras/c', { pool: 'p', streams: { main: sim.url('h264') } });
  await waitFor('3 backup copies of c', async () => ((await filesUnder(join(backupDir, 'pools', 'p', 'c'))).length >= 3 ? true : null), 60_000);

  // The first segment's deletion is committed with its intent, then the process dies.
  void fetch(`${http}/api/cameras/c?purge=1`, { method: 'DELETE' }).catch(() => undefined);
  const code = await Promise.race([first.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
  t.not(code, 'timeout', "the purge reached its first deletion's intent");
  const before = await RecorderIndex.open(dataDir);
  const intents = before.intents.list();
  await before.close();
  t.deepEqual(intents.map((i) => i.kind).sort(), ['delete', 'purge'], 'the purge and its first deletion were pending at the kill');

  // Restart (no crash point): the deletion and the rest of the purge are finished before reconcile.
  const second = spawnRecorder(t, env);
  await second.http;
  second.child.kill('SIGTERM');
  await second.exited;
  const index = await RecorderIndex.open(dataDir);
  t.teardown(() => index.close());
  t.deepEqual([...index.segments.all('c')], [], 'no segment of the purged camera came back');
  t.is(index.cameras.get('c'), undefined);
  t.deepEqual(index.intents.list(), []);
  t.deepEqual(await filesUnder(join(dataDir, 'pools', 'p', 'c')), [], 'no primary copy left');
  t.deepEqual(await filesUnder(join(backupDir, 'pools', 'p', 'c')), [], 'no backup copy left');
  t.is(index.segments.poolUsage('p'), 0);
});
