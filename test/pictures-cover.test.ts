/**
 * Picture locks and cover (issue 16 item 5) through HTTP on a real node: a pool whose
 * pictures may hold ~600 kB, packs of 64 kB, a flood of pictures. The oldest packs are
 * covered and the pool's picture bytes stay bounded; a picture locked by URL and the
 * pictures locked in batch survive with the same bytes (written again into the current
 * pack), are found by `locked=true`, and go once unlocked; a cycle pool covers what is
 * older than its days; a pack a crash left half covered is finished at the next start,
 * also after a real SIGKILL between the mark and the unlink; `recorder check` is clean
 * at the end.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { spawnRecorder, startNode, tempDir, waitFor } from './helpers/recorder.ts';
import { checkPictures } from './helpers/check.ts';

const run = promisify(execFile);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A JPEG of noise (incompressible): ~12 kB at 160x120. */
async function jpeg(seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(160 * 120 * 3);
  let x = seed * 2654435761;
  for (let i = 0; i < raw.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    raw[i] = x >>> 24;
  }
  return sharp(raw, { raw: { width: 160, height: 120, channels: 3 } })
    .jpeg({ quality: 80 })
    .toBuffer();
}

async function json<T>(method: string, url: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(url, { method, ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}) });
  return { status: res.status, body: (await res.json()) as T };
}

interface Pool {
  pool: { pictureBytes: number };
}
interface Search {
  pictures: { id: string; lockedUntil?: string | null }[];
}

test('cover keeps a pool’s pictures under its quota, oldest first; locked pictures survive byte-identical until unlocked; a half-done cover is finished at the start', async (t) => {
  const dataDir = await tempDir(t);
  const cap = 600_000;
  const n = await startNode(t, { picturePackBytes: 64 * 1024, retentionTickMs: 200 }, dataDir);
  t.is((await json('PUT', `${n.http}/api/pools/pics`, { capacityBytes: null, overwrite: 'capacity', pictureCapacityBytes: cap })).status, 200);
  t.is((await json('PUT', `${n.http}/api/cameras/gate`, { pool: 'pics', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status, 200);
  const t0 = Date.parse('2026-03-01T10:00:00Z');
  const written: { id: string; bytes: Buffer }[] = [];
  const write = async (i: number): Promise<void> => {
    const bytes = await jpeg(i + 1);
    const res = await fetch(`${n.http}/api/pictures?camera=gate&type=alarm&at=${t0 + i * 1000}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: bytes,
    });
    t.is(res.status, 200);
    written.push({ id: ((await res.json()) as { id: string }).id, bytes });
  };
  for (let i = 0; i < 20; i++) await write(i);
  // One picture locked by URL (for ever), pictures 10-12 in batch until tomorrow.
  const one = written[3]!;
  const locked = await json<{ picture: { lockedUntil: string | null } }>('POST', `${n.http}/api/pictures/${one.id}/lock`, {});
  t.is(locked.status, 200);
  t.is(locked.body.picture.lockedUntil, null);
  const batch = await json<{ pictures: number }>('POST', `${n.http}/api/pictures/locks`, {
    camera: 'gate',
    from: t0 + 10_000,
    to: t0 + 13_000,
    until: new Date(Date.now() + 86_400_000).toISOString(),
  });
  t.deepEqual(batch.body, { pictures: 3 });
  // Bad input: typed errors, nothing changed.
  t.is((await json<{ error: { code: string } }>('POST', `${n.http}/api/pictures/gate.1.0/lock`, {})).body.error.code, 'PICTURE_NOT_FOUND');
  t.is(
    (await json<{ error: { code: string } }>('POST', `${n.http}/api/pictures/${one.id}/lock`, { until: '2001-01-01T00:00:00Z' })).body.error.code,
    'BAD_TIME',
  );
  t.is(
    (await json<{ error: { code: string } }>('POST', `${n.http}/api/pictures/locks`, { camera: 'nope', from: t0, to: t0 + 1 })).body.error.code,
    'CAMERA_NOT_FOUND',
  );

  // The flood: far more than the quota.
  for (let i = 20; i < 150; i++) await write(i);
  const pictureBytes = async (): Promise<number> => (await json<Pool>('GET', `${n.http}/api/pools/pics`)).body.pool.pictureBytes;
  // Bounded: the quota plus the open pack (covered packs are closed ones) and a pack's slack.
  await waitFor('picture bytes under the quota', async () => (await pictureBytes()) <= cap + 2 * 64 * 1024, 30_000, 200);
  const range = `camera=gate&from=${t0}&to=${t0 + 200_000}&limit=1000`;
  const left = (await json<Search>('GET', `${n.http}/api/pictures?${range}`)).body.pictures.map((p) => p.id);
  t.false(left.includes(written[0]!.id), 'the oldest picture was covered');
  t.true(left.includes(written[149]!.id), 'the newest is kept');
  t.is((await fetch(`${n.http}/api/pictures/${written[5]!.id}`)).status, 404);
  for (const p of [one, written[10]!, written[11]!, written[12]!]) {
    const res = await fetch(`${n.http}/api/pictures/${p.id}`);
    t.is(res.status, 200, `${p.id} is locked and kept`);
    t.is(sha(Buffer.from(await res.arrayBuffer())), sha(p.bytes), `${p.id}: the same bytes`);
  }
  const lockedNow = (await json<Search>('GET', `${n.http}/api/pictures?${range}&locked=true`)).body.pictures;
  t.deepEqual(
    lockedNow.map((p) => p.id),
    [one.id, written[10]!.id, written[11]!.id, written[12]!.id],
  );
  t.is(lockedNow[0]!.lockedUntil, null);

  // Unlocked, the batch goes with the next cover of its pack.
  const unlocked = await json<{ pictures: number }>('DELETE', `${n.http}/api/pictures/locks?camera=gate&from=${t0 + 10_000}&to=${t0 + 13_000}`);
  t.deepEqual(unlocked.body, { pictures: 3 });
  for (let i = 150; i < 220; i++) await write(i);
  await waitFor('the unlocked pictures covered', async () => (await fetch(`${n.http}/api/pictures/${written[10]!.id}`)).status === 404, 30_000, 200);
  t.is((await fetch(`${n.http}/api/pictures/${one.id}`)).status, 200, 'the one still locked stays');

  // A pack a crash left half covered (marked, file still there) is finished at the next start.
  // (Cover marks a pack only after moving its locked pictures out: pick one without any.)
  const victim = n.node.index.pictures
    .allPacks()
    .find((p) => p.closed && p.pool === 'pics' && n.node.index.pictures.entriesOfPack(p).every((h) => !n.node.index.pictures.lockOf(h.key)))!;
  const victimIds = n.node.index.pictures.entriesOfPack(victim).map((h) => `${h.key[0]}.${h.key[1]}.${h.key[2]}`);
  t.true(victimIds.length > 0);
  await n.node.index.pictures.putPack({ ...victim, covering: true });
  await n.node.stop();
  const n2 = await startNode(t, { picturePackBytes: 64 * 1024 }, dataDir);
  t.false(existsSync(join(dataDir, victim.file)), 'its file is gone');
  t.is((await fetch(`${n2.http}/api/pictures/${victimIds[0]!}`)).status, 404);
  t.is((await fetch(`${n2.http}/api/pictures/${one.id}`)).status, 200);
  await n2.node.stop();
  const { stdout } = await run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../recorder.ts'), 'check'], {
    env: { ...process.env, RECORDER_DATA_DIR: dataDir, RECORDER_LOG_LEVEL: 'silent' },
  });
  t.like(JSON.parse(stdout) as object, { pictures: { droppedPacks: [], finishedCovers: [], mismatched: [] } });
});

test('a cycle pool covers picture packs older than its days; a picture lock expires', async (t) => {
  const n = await startNode(t, { picturePackBytes: 64 * 1024, retentionTickMs: 200 });
  t.is((await json('PUT', `${n.http}/api/pools/week`, { capacityBytes: null, overwrite: 'cycle', cycleDays: 7 })).status, 200);
  t.is((await json('PUT', `${n.http}/api/cameras/door`, { pool: 'week', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status, 200);
  const old = Date.now() - 10 * 86_400_000;
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) {
    const res = await fetch(`${n.http}/api/pictures?camera=door&at=${old + i * 1000}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: await jpeg(i + 100),
    });
    ids.push(((await res.json()) as { id: string }).id);
  }
  // A lock that ends: from then on the picture counts as unlocked.
  const until = Date.now() + 1000;
  const lockedOld = await json<{ picture: { lockedUntil?: string | null } }>('POST', `${n.http}/api/pictures/${ids[11]!}/lock`, { until });
  t.is(lockedOld.body.picture.lockedUntil, new Date(until).toISOString());
  const lockedQuery = `camera=door&from=${old}&to=${Date.now() + 60_000}&locked=true`;
  await waitFor(
    'the lock ended',
    async () => Date.now() > until && (await json<Search>('GET', `${n.http}/api/pictures?${lockedQuery}`)).body.pictures.length === 0,
    10_000,
    100,
  );
  // Recent pictures close the old packs (a pack rotates at 64 kB) and stay.
  const recent: string[] = [];
  for (let i = 0; i < 12; i++) {
    const res = await fetch(`${n.http}/api/pictures?camera=door&at=${Date.now()}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: await jpeg(i + 200),
    });
    recent.push(((await res.json()) as { id: string }).id);
  }
  // The last old pictures may share their pack with recent ones: they go with that pack.
  const gone = async (id: string): Promise<boolean> => (await fetch(`${n.http}/api/pictures/${id}`)).status === 404;
  await waitFor('the old packs covered', async () => (await Promise.all(ids.slice(0, 8).map(gone))).every(Boolean), 30_000, 200);
  t.is((await fetch(`${n.http}/api/pictures/${recent[recent.length - 1]!}`)).status, 200);

  // The same over NATS: one picture by id, then in batch.
  const last = recent[recent.length - 1]!;
  const viaNats = await n.request<{ picture: { id: string; lockedUntil: string | null } }>('rec.v1.picture.lock', { id: last });
  t.true(viaNats.ok, JSON.stringify(viaNats));
  t.deepEqual([viaNats.picture.id, viaNats.picture.lockedUntil], [last, null]);
  const q = `camera=door&from=${Date.now() - 600_000}&to=${Date.now() + 60_000}&locked=true`;
  t.deepEqual(
    (await json<Search>('GET', `${n.http}/api/pictures?${q}`)).body.pictures.map((p) => p.id),
    [last],
  );
  const batch = await n.request<{ pictures: number }>('rec.v1.picture.unlock', { camera: 'door', from: Date.now() - 600_000, to: Date.now() + 60_000 });
  t.deepEqual([batch.ok, batch.pictures], [true, 1]);
  t.is((await n.request<{ error: { code: string } }>('rec.v1.picture.lock', { id: 'door.1.0' })).error?.code, 'PICTURE_NOT_FOUND');
});

test('kill -9 inside a cover, between the pack marked covering and its unlink: the restart finishes it; locked and newer pictures keep their bytes; check is clean', async (t) => {
  t.timeout(120_000);
  const dataDir = await tempDir(t);
  const env = { RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_PICTURE_PACK_BYTES: '65536', RECORDER_RETENTION_TICK_MS: '200' };
  const t0 = Date.parse('2026-03-01T10:00:00Z');
  const answered = new Map<string, string>();
  const write = async (http: string, i: number): Promise<string> => {
    const bytes = await jpeg(i + 1);
    const res = await fetch(`${http}/api/pictures?camera=gate&type=alarm&at=${t0 + i * 1000}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: bytes,
    });
    if (res.status !== 200) throw new Error(`write ${i}: ${res.status}`);
    const id = ((await res.json()) as { id: string }).id;
    answered.set(id, sha(bytes));
    return id;
  };
  // Set up: a pool of ~300 kB of pictures, the first picture locked for ever.
  const setup = spawnRecorder(t, env);
  const http0 = await setup.http;
  t.is((await json('PUT', `${http0}/api/pools/pics`, { capacityBytes: null, overwrite: 'capacity', pictureCapacityBytes: 300_000 })).status, 200);
  t.is((await json('PUT', `${http0}/api/cameras/gate`, { pool: 'pics', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status, 200);
  const locked = await write(http0, 0);
  t.is((await json('POST', `${http0}/api/pictures/${locked}/lock`, {})).status, 200);
  // A first pack of a few pictures beside the locked one: the one the first cover takes.
  for (let i = 1; i < 4; i++) await write(http0, i);
  setup.child.kill('SIGTERM');
  t.is(await setup.exited, 0);

  // The flood until the first cover kills the process right after marking its pack.
  const crashing = spawnRecorder(t, { ...env, RECORDER_CRASH_POINT: 'pictures.cover-marked' });
  const http1 = await crashing.http;
  let died = false;
  void crashing.exited.then(() => (died = true));
  for (let i = 4; i < 200 && !died; i++) await write(http1, i).catch(() => undefined);
  await crashing.exited;
  t.true(died, 'the cover reached its crash point');
  const marked = await checkPictures(dataDir);
  const finishing = (marked.pictures.finishedCovers as string[] | undefined) ?? [];
  t.is(finishing.length, 1, `check finds the pack marked covering: ${JSON.stringify(marked.pictures)}`);
  t.true(existsSync(join(dataDir, finishing[0]!)), 'the kill came before its file was unlinked');

  // The restart finishes the cover: nothing half there, every kept picture byte-identical.
  const second = spawnRecorder(t, env);
  const http2 = await second.http;
  let kept = 0;
  let covered = 0;
  for (const [id, hash] of answered) {
    const res = await fetch(`${http2}/api/pictures/${id}`);
    if (res.status === 404) {
      covered++;
      continue;
    }
    t.is(res.status, 200, id);
    t.is(sha(Buffer.from(await res.arrayBuffer())), hash, `${id}: the same bytes`);
    kept++;
  }
  t.true(covered > 0, 'the marked pack’s pictures are gone');
  t.false(existsSync(join(dataDir, finishing[0]!)), 'its file is gone');
  t.true(kept > 0);
  const lockedRes = await fetch(`${http2}/api/pictures/${locked}`);
  t.is(lockedRes.status, 200, 'the locked picture survived the crash inside its pack’s cover');
  second.child.kill('SIGTERM');
  t.is(await second.exited, 0);
  const clean = await checkPictures(dataDir);
  t.is(clean.code, 0, JSON.stringify(clean.pictures));
  t.like(clean.pictures, { droppedPacks: [], mismatched: [] });
});

test('picture locks are kept to the pool’s maxLockShare of its picture quota: a lock past it is LOCK_SHARE_EXCEEDED and changes nothing', async (t) => {
  const n = await startNode(t, { picturePackBytes: 64 * 1024 });
  t.is(
    (await json('PUT', `${n.http}/api/pools/small`, { capacityBytes: null, overwrite: 'capacity', pictureCapacityBytes: 100_000, maxLockShare: 0.5 })).status,
    200,
  );
  t.is((await json('PUT', `${n.http}/api/cameras/door`, { pool: 'small', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status, 200);
  const t0 = Date.parse('2026-03-02T10:00:00Z');
  const ids: string[] = [];
  let bytes = 0;
  for (let i = 0; i < 6; i++) {
    const body = await jpeg(100 + i);
    bytes += body.length;
    const res = await fetch(`${n.http}/api/pictures?camera=door&type=alarm&at=${t0 + i * 1000}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body,
    });
    t.is(res.status, 200);
    ids.push(((await res.json()) as { id: string }).id);
  }
  const each = bytes / ids.length;
  // 50 kB may be locked: three pictures of ~12 kB fit, a fifth does not.
  const batch = await json<{ pictures: number }>('POST', `${n.http}/api/pictures/locks`, { camera: 'door', from: t0, to: t0 + 3000 });
  t.is(batch.status, 200);
  t.deepEqual(batch.body, { pictures: 3 });
  t.is((await json('POST', `${n.http}/api/pictures/${ids[3]!}/lock`, {})).status, 200, `a fourth (${Math.round(4 * each)} bytes in all) still fits`);
  const over = await json<{ error: { code: string; message: string } }>('POST', `${n.http}/api/pictures/${ids[4]!}/lock`, {});
  t.is(over.status, 409);
  t.is(over.body.error.code, 'LOCK_SHARE_EXCEEDED');
  t.regex(over.body.error.message, /over 50000 \(maxLockShare 0.5 of pictureCapacityBytes 100000\)/);
  const overBatch = await json<{ error: { code: string } }>('POST', `${n.http}/api/pictures/locks`, { camera: 'door', from: t0 + 4000, to: t0 + 6000 });
  t.is(overBatch.body.error.code, 'LOCK_SHARE_EXCEEDED');
  const locked = (await json<Search>('GET', `${n.http}/api/pictures?camera=door&from=${t0}&to=${t0 + 10_000}&locked=true`)).body.pictures.map((p) => p.id);
  t.deepEqual(locked, ids.slice(0, 4), 'the refused locks changed nothing');
  // Locking again what is locked costs nothing; unlocking makes room.
  t.is((await json('POST', `${n.http}/api/pictures/${ids[0]!}/lock`, {})).status, 200);
  t.is((await json('DELETE', `${n.http}/api/pictures/${ids[0]!}/lock`)).status, 200);
  t.is((await json('POST', `${n.http}/api/pictures/${ids[4]!}/lock`, {})).status, 200);
});
