/**
 * Pool policies that need time or a full disk, tried for real: `cycle` with an
 * injected clock (a node restarted on recorded video with its clock moved on two
 * days), backup copies lost and re-created, the emergency overwrite when the disk's
 * free space is under the threshold, and ENOSPC on a real 512 KiB tmpfs mounted under
 * the pools dir (root only; where mounting is not permitted the ENOSPC test says so
 * in its log and checks nothing else).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { connect } from 'nats';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Alarm } from '../lib/alarms.ts';
import { SimCamera } from '../sim/camera.ts';
import { startNatsServer } from './helpers/nats-server.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);
const DAY_MS = 86_400_000;
const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

function closedSegments(n: TestNode, camera: string) {
  return [...n.node.index.segments.all(camera)].filter((s) => !s.open);
}

/** A nats-server of this test's own (killed after the clients close: teardowns run last-in first-out). */
async function externalNats(t: import('ava').ExecutionContext): Promise<string> {
  return (await startNatsServer(t, (port) => ['-a', '127.0.0.1', '-p', String(port)])).url;
}

async function alarmsOf(t: import('ava').ExecutionContext, n: TestNode, kind: string): Promise<Alarm[]> {
  const got: Alarm[] = [];
  const sub = n.nc.subscribe(`rec.v1.alarm.${kind}`, { callback: (_e, m) => got.push(m.json<Alarm>()) });
  t.teardown(() => sub.unsubscribe());
  await n.nc.flush();
  return got;
}

test('cycle mode with an injected clock: nothing older than the cycle remains, newer video stays', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const first = await startNode(t, { segmentSeconds: 2 }, dataDir);
  t.true((await first.request('rec.v1.camera.put', { id: 'c', streams: { main: sim.url('h264') } })).ok);
  const segs = await waitFor(
    '6 closed segments',
    () => {
      const s = closedSegments(first, 'c');
      return s.length >= 6 ? s : null;
    },
    60_000,
  );
  t.true((await first.request('rec.v1.camera.delete', { id: 'c' })).ok, 'stop recording, keep the video');
  await first.node.stop();

  // Two days and a bit later: the cycle cut falls in the middle of what was recorded.
  const cut = segs[3]!.startMs;
  const offset = cut + 2 * DAY_MS - Date.now();
  const n = await startNode(t, { segmentSeconds: 2, retentionTickMs: 300 }, dataDir, { clock: { nowMs: () => Date.now() + offset } });
  t.true((await n.request('rec.v1.pool.put', { id: 'default', capacityBytes: null, overwrite: 'cycle', cycleDays: 2 })).ok);
  await waitFor('the cycle pass', () => (n.node.index.segments.get('c', segs[2]!.startMs) ? null : true), 20_000);
  const left = [...n.node.index.segments.all('c')];
  t.true(left.length >= 3, `${left.length} newer segments kept`);
  for (const s of left) t.true(s.endMs > cut - 1, `${new Date(s.startMs).toISOString()} is within the cycle`);
  for (const s of segs.filter((x) => x.endMs <= cut)) t.false(await exists(join(dataDir, s.file)), `${s.file} deleted from disk`);
});

test('backup copies: every closed segment is copied to the backup disk; a lost copy on either side is re-created', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const backupDir = await tempDir(t, 'backup-');
  const n = await startNode(t, { segmentSeconds: 2, backupAuditMs: 1000 }, dataDir);
  t.true((await n.request('rec.v1.pool.put', { id: 'mirrored', capacityBytes: null, overwrite: 'capacity', backupDir })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'c', pool: 'mirrored', streams: { main: sim.url('h264') } })).ok);
  const segs = await waitFor(
    '3 closed segments with backups',
    async () => {
      const s = closedSegments(n, 'c');
      if (s.length < 3) return null;
      for (const x of s) if (!(await exists(join(backupDir, x.file)))) return null;
      return s;
    },
    60_000,
  );
  for (const s of segs) t.is((await stat(join(backupDir, s.file))).size, s.bytes, 'backup is a full copy');

  // A lost backup copy is re-created by the audit.
  await rm(join(backupDir, segs[0]!.file));
  await waitFor('backup re-created', () => exists(join(backupDir, segs[0]!.file)).then((e) => e || null), 15_000);

  // A lost primary copy is restored from the backup at the next start (before reconcile would drop it).
  t.true((await n.request('rec.v1.camera.delete', { id: 'c' })).ok);
  await n.node.stop();
  await rm(join(dataDir, segs[1]!.file));
  const n2 = await startNode(t, { segmentSeconds: 2 }, dataDir);
  t.true(await exists(join(dataDir, segs[1]!.file)), 'primary restored');
  t.truthy(n2.node.index.segments.get('c', segs[1]!.startMs), 'its index entry kept');
  t.is((await stat(join(dataDir, segs[1]!.file))).size, segs[1]!.bytes);
});

test('emergency overwrite: under the free-space threshold the oldest unlocked video goes whatever the pool mode, with an alarm', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const first = await startNode(t, { segmentSeconds: 2 }, dataDir);
  t.true((await first.request('rec.v1.camera.put', { id: 'c', streams: { main: sim.url('h264') } })).ok);
  const segs = await waitFor(
    '4 closed segments',
    () => {
      const s = closedSegments(first, 'c');
      return s.length >= 4 ? s : null;
    },
    60_000,
  );
  const lock = await first.request('rec.v1.lock', {
    camera: 'c',
    from: new Date(segs[1]!.startMs).toISOString(),
    to: new Date(segs[1]!.endMs - 1).toISOString(),
  });
  t.true(lock.ok, JSON.stringify(lock));
  t.true((await first.request('rec.v1.camera.delete', { id: 'c' })).ok);
  await first.node.stop();

  // A threshold no disk can meet: everything unlocked must go, the locked segment stays.
  // The disk is "full" from the first instant, so the alarm is raised during start-up and
  // sent when NATS connects (it starts last): listen on the server before the node
  // starts, as a VMS already connected to it does.
  const natsUrl = await externalNats(t);
  const listener = await connect({ servers: natsUrl });
  t.teardown(() => listener.close());
  const alarms: Alarm[] = [];
  listener.subscribe('rec.v1.alarm.disk-full', { callback: (_e, m) => alarms.push(m.json<Alarm>()) });
  await listener.flush();
  const n = await startNode(t, { segmentSeconds: 2, retentionTickMs: 300, minFreeBytes: Number.MAX_SAFE_INTEGER, natsUrl }, dataDir);
  await waitFor('emergency overwrite', () => ([...n.node.index.segments.all('c')].length === 1 ? true : null), 20_000);
  t.truthy(n.node.index.segments.get('c', segs[1]!.startMs), 'the locked segment survives');
  await waitFor('disk-full alarm', () => (alarms.length > 0 ? true : null), 10_000);
  t.regex(alarms[0]!.message, /emergency overwrite/);
  // The pool view counts emergency deletions with the others (issue 13: it left them out).
  const pool = (await getJson<{ pool: { deletedSegments: number } }>(`${n.http}/api/pools/default`)).body.pool;
  t.true(pool.deletedSegments >= segs.length - 1, JSON.stringify(pool));
});

test('ENOSPC on the video disk is an alarm and a retry, never a crash; recording resumes when space is made', async (t) => {
  const dataDir = await tempDir(t);
  const pools = join(dataDir, 'pools');
  await mkdir(pools, { recursive: true });
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', pools]);
  } catch (err) {
    t.log(`cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]}): ENOSPC not tried on this machine`);
    t.pass();
    return;
  }
  t.teardown(() =>
    run('umount', ['-l', pools]).then(
      () => undefined,
      () => undefined,
    ),
  );
  const sim = await SimCamera.start({ gop: 25, bitrateKbit: 800 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { segmentSeconds: 2, retentionTickMs: 300, backoffMaxMs: 1000 }, dataDir);
  const writeErrors = await alarmsOf(t, n, 'write-error');
  t.true((await n.request('rec.v1.camera.put', { id: 'c', streams: { main: sim.url('h264') } })).ok);
  await waitFor('a write error alarm (disk full)', () => (writeErrors.length > 0 ? true : null), 90_000);
  t.regex(writeErrors[0]!.message, /ENOSPC/);
  const stuckAt = [...n.node.index.segments.all('c')].length;
  t.true(stuckAt > 0);

  // Make room through the pool: a capacity under what the disk holds.
  t.true((await n.request('rec.v1.pool.put', { id: 'default', capacityBytes: 250_000, overwrite: 'capacity' })).ok);
  const before = Date.now();
  await waitFor('recording resumes', () => ([...n.node.index.segments.all('c')].some((s) => s.endMs > before + 3000) ? true : null), 60_000);
  t.true(n.node.index.segments.poolUsage('default') <= 250_000 + 200_000);
});

test('full pools stop recording with an alarm and an open gap (mode none; a capacity pool holding only locked video); growing the pool resumes at once; usage is exact across a restart', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const n = await startNode(t, { segmentSeconds: 2, retentionTickMs: 300 }, dataDir);
  const full = await alarmsOf(t, n, 'pool-full');
  t.true((await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: 120_000, overwrite: 'none' })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'c', pool: 'p', streams: { main: sim.url('h264') } })).ok);
  await waitFor('pool-full alarm (mode none)', () => (full.length > 0 ? true : null), 60_000);
  t.regex(full[0]!.message, /overwrite mode is none/);
  const openGap = await waitFor('an open gap with the reason', () => n.node.index.gaps.open('c').find((g) => /full/.test(g.reason)) ?? null, 10_000);
  const stalled = n.node.index.segments.last('c')!.endMs;
  await new Promise((r) => setTimeout(r, 4000));
  t.is([...n.node.index.segments.all('c')].filter((s) => s.endMs > stalled + 2500).length, 0, 'nothing written while full');

  // Grow it: writing resumes at once and the gap closes.
  t.true((await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: 10_000_000, overwrite: 'none' })).ok);
  await waitFor('recording resumes', () => (n.node.index.segments.last('c')!.endMs > stalled + 3000 ? true : null), 30_000);
  const closed = n.node.index.gaps.get('c', openGap.startMs);
  t.truthy(closed?.endMs, 'the gap is closed');

  // A capacity pool whose video is all locked: no deletion of locked video, recording stops.
  const segs = [...n.node.index.segments.all('c')];
  const from = new Date(segs[0]!.startMs).toISOString();
  const to = new Date(Date.now() + 600_000).toISOString();
  t.true((await n.request('rec.v1.lock', { camera: 'c', from, to })).ok);
  const lockedBytes = n.node.index.segments.poolUsage('p');
  t.true((await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: lockedBytes, overwrite: 'capacity', maxLockShare: 1 })).ok);
  await waitFor('pool-full alarm (only locked video)', () => (full.some((a) => /only locked/.test(a.message)) ? true : null), 30_000);
  for (const s of segs) t.truthy(n.node.index.segments.get('c', s.startMs), 'locked video kept');

  // A lock that would exceed maxLockShare is refused.
  t.true((await n.request('rec.v1.unlock', { camera: 'c', from, to })).ok);
  t.true((await n.request('rec.v1.pool.put', { id: 'p', capacityBytes: 10_000_000, overwrite: 'capacity', maxLockShare: 0.001 })).ok);
  const refused = await n.request('rec.v1.lock', { camera: 'c', from, to });
  t.is(refused.error?.code, 'LOCK_SHARE_EXCEEDED');

  // Usage is the exact sum of the indexed bytes, also after a restart (nothing records then).
  t.true((await n.request('rec.v1.camera.delete', { id: 'c' })).ok);
  await n.node.stop();
  const again = await startNode(t, { segmentSeconds: 2 }, dataDir);
  const sum = [...again.node.index.segments.all()].filter((s) => s.pool === 'p').reduce((a, s) => a + s.bytes, 0);
  t.is(again.node.index.segments.poolUsage('p'), sum);
});
