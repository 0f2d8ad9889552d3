/**
 * Picture storage through the real interface (issue 16): writes over HTTP as an alarm
 * server would, reads by URL (ETag, Range), bad input refused with nothing stored, and
 * crash safety with a real recorder process: kill -9 during a write flood loses no
 * picture that was answered, a SIGKILL between a batch's fdatasync and its index commit
 * leaves a synced tail that the restart indexes, a torn tail is truncated, and
 * `recorder check` finds the packs and the index consistent afterwards.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { appendFile, readdir, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import sharp, { type Metadata } from 'sharp';
import { readZip } from './helpers/zip-reader.ts';
import { spawnRecorder, startNode, tempDir, waitFor } from './helpers/recorder.ts';
import { checkPictures } from './helpers/check.ts';

/** A real JPEG of noise (incompressible, so its size is about `w*h*0.6` bytes at q90). */
async function jpeg(w: number, h: number, seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  let x = seed * 2654435761;
  for (let i = 0; i < raw.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    raw[i] = x >>> 24;
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

interface PutAnswer {
  id: string;
  url: string;
  camera: string;
  at: string;
  seq: number;
  type: string;
  bytes: number;
  width: number;
  height: number;
  meta?: Record<string, string>;
  error?: { code: string; message: string };
}

async function post(http: string, query: string, body: Uint8Array, type = 'image/jpeg'): Promise<{ status: number; body: PutAnswer }> {
  const res = await fetch(`${http}/api/pictures?${query}`, { method: 'POST', headers: { 'content-type': type }, body });
  return { status: res.status, body: (await res.json()) as PutAnswer };
}

async function addCamera(http: string, id: string): Promise<void> {
  // A camera nobody answers for: the pictures come from elsewhere (an alarm server).
  const res = await fetch(`${http}/api/cameras/${id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ streams: { main: 'rtsp://127.0.0.1:9/none' } }),
  });
  if (res.status !== 200) throw new Error(`camera ${id}: ${res.status} ${await res.text()}`);
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function packSizes(dataDir: string): Promise<number> {
  const dir = join(dataDir, 'pictures');
  let total = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

test('a picture written over HTTP reads back by its URL: same bytes, ETag, Range, metadata', async (t) => {
  const { http, node } = await startNode(t);
  await addCamera(http, 'gate');
  const pic = await jpeg(320, 240, 1);
  const at = '2026-03-01T10:00:00.123Z';
  const put = await post(http, `camera=gate&at=${at}&type=anpr&meta.plate=AB123`, pic);
  t.is(put.status, 200, JSON.stringify(put.body));
  t.like(put.body, {
    id: `gate.${Date.parse(at)}.0`,
    camera: 'gate',
    at,
    seq: 0,
    type: 'anpr',
    bytes: pic.length,
    width: 320,
    height: 240,
    meta: { plate: 'AB123' },
  });
  t.is(put.body.url, `/api/pictures/${put.body.id}`);

  const got = await fetch(`${http}${put.body.url}`);
  t.is(got.status, 200);
  t.is(got.headers.get('content-type'), 'image/jpeg');
  t.is(Number(got.headers.get('content-length')), pic.length);
  t.deepEqual(Buffer.from(await got.arrayBuffer()), pic);
  const etag = got.headers.get('etag')!;
  t.regex(etag, /^"p[0-9a-z]+-\d+-\d+"$/);

  const part = await fetch(`${http}${put.body.url}`, { headers: { range: 'bytes=100-1099' } });
  t.is(part.status, 206);
  t.is(part.headers.get('content-range'), `bytes 100-1099/${pic.length}`);
  t.deepEqual(Buffer.from(await part.arrayBuffer()), pic.subarray(100, 1100));
  t.is((await fetch(`${http}${put.body.url}`, { headers: { 'if-none-match': etag } })).status, 304);
  t.is((await fetch(`${http}${put.body.url}`, { headers: { range: `bytes=${pic.length}-` } })).status, 416);

  // Many writers at one instant: one seq each, every one readable, many per fdatasync.
  const pics = await Promise.all(Array.from({ length: 40 }, (_, i) => jpeg(64, 48, 100 + i)));
  const batchesBefore = node.pictures!.batches();
  const puts = await Promise.all(pics.map((p) => post(http, `camera=gate&at=${at}&type=alarm`, p)));
  t.deepEqual(
    puts.map((p) => p.status).filter((s) => s !== 200),
    [],
  );
  t.deepEqual(
    puts.map((p) => p.body.seq).sort((a, b) => a - b),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  t.true(node.pictures!.batches() - batchesBefore < 40, `${node.pictures!.batches() - batchesBefore} batches for 40 concurrent writes`);
  for (const [i, p] of puts.entries()) {
    const res = await fetch(`${http}${p.body.url}`);
    t.is(sha(Buffer.from(await res.arrayBuffer())), sha(pics[i]!), p.body.id);
  }
  const missing = await fetch(`${http}/api/pictures/gate.${Date.parse(at)}.999`);
  t.is(missing.status, 404);
  t.is(((await missing.json()) as { error: { code: string } }).error.code, 'PICTURE_NOT_FOUND');
  t.is((await fetch(`${http}/api/pictures/not-an-id`)).status, 404);
});

test('bad pictures are typed errors and store nothing: not a JPEG, truncated, 200 MB, unknown camera, far future, bad type', async (t) => {
  const { http, dataDir, node } = await startNode(t, { pictureMaxBytes: 4 * 1024 * 1024 });
  await addCamera(http, 'cam');
  const good = await jpeg(200, 150, 7);
  t.is((await post(http, 'camera=cam', good)).status, 200);
  const count = node.index.pictures.count();
  const bytes = await packSizes(dataDir);

  const cases: [string, string, Uint8Array, number, string, string?][] = [
    ['not a JPEG', 'camera=cam', Buffer.from('this is not a picture at all, just some text'), 422, 'PICTURE_INVALID'],
    ['a PNG', 'camera=cam', await sharp(good).png().toBuffer(), 422, 'PICTURE_INVALID'],
    ['truncated JPEG', 'camera=cam', good.subarray(0, good.length - 500), 422, 'PICTURE_INVALID'],
    ['headers only', 'camera=cam', good.subarray(0, 300), 422, 'PICTURE_INVALID'],
    ['unknown camera', 'camera=nope', good, 404, 'CAMERA_NOT_FOUND'],
    ['far future', `camera=cam&at=${new Date(Date.now() + 86_400_000).toISOString()}`, good, 400, 'BAD_TIME'],
    ['bad time', 'camera=cam&at=yesterday', good, 400, 'BAD_TIME'],
    ['bad type', 'camera=cam&type=Alarm!', good, 400, 'VALIDATION_FAILED'],
    ['bad meta name', 'camera=cam&meta.a%20b=1', good, 400, 'VALIDATION_FAILED'],
    ['unknown field', 'camera=cam&colour=red', good, 400, 'VALIDATION_FAILED'],
    ['JSON body', 'camera=cam', Buffer.from('{"a":1}'), 422, 'PICTURE_INVALID', 'application/json'],
    ['text body', 'camera=cam', Buffer.from('x'), 422, 'PICTURE_INVALID', 'text/plain'],
  ];
  for (const [what, query, body, status, code, type] of cases) {
    const res = await post(http, query, body, type);
    t.is(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
    t.is(res.body.error?.code, code, what);
  }

  // 200 MB announced: refused from its Content-Length, before the body is read.
  const big = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(`${http}/api/pictures?camera=cam`, { method: 'POST', headers: { 'content-type': 'image/jpeg', 'content-length': 200 * 1024 * 1024 } });
    req.on('response', (res) => {
      let s = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (s += c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: s });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.write(Buffer.alloc(1024 * 1024, 0xff));
  });
  t.is(big.status, 413);
  t.is((JSON.parse(big.body) as { error: { code: string; message: string } }).error.code, 'PAYLOAD_TOO_LARGE');

  t.is(node.index.pictures.count(), count, 'no picture indexed');
  t.is(await packSizes(dataDir), bytes, 'no byte appended to any pack');
  t.is((await post(http, 'camera=cam', good)).status, 200, 'the next good picture is stored');
});

test('kill -9 during a write flood loses no answered picture; check is consistent after the restart', async (t) => {
  t.timeout(180_000);
  const dataDir = await tempDir(t);
  const env = { RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_PICTURE_PACK_BYTES: String(4 * 1024 * 1024) };
  const first = spawnRecorder(t, env);
  const http = await first.http;
  await addCamera(http, 'flood');
  const pics = await Promise.all(Array.from({ length: 16 }, (_, i) => jpeg(400, 300, 1000 + i)));
  const answered = new Map<string, string>();
  let failed = 0;
  let stop = false;
  const writer = async (w: number): Promise<void> => {
    for (let i = 0; !stop; i++) {
      const pic = pics[(w + i) % pics.length]!;
      try {
        const res = await post(http, `camera=flood&type=alarm&meta.writer=${w}`, pic);
        if (res.status === 200) answered.set(res.body.id, sha(pic));
      } catch {
        failed++;
        return;
      }
    }
  };
  const writers = Array.from({ length: 8 }, (_, w) => writer(w));
  await waitFor('300 answered pictures', () => answered.size >= 300, 60_000, 20);
  first.child.kill('SIGKILL');
  stop = true;
  await first.exited;
  await Promise.all(writers);
  t.log(`${answered.size} answered before the kill, ${failed} writers cut`);

  const second = spawnRecorder(t, env);
  const http2 = await second.http;
  for (const [id, hash] of answered) {
    const res = await fetch(`${http2}/api/pictures/${id}`);
    t.is(res.status, 200, id);
    t.is(sha(Buffer.from(await res.arrayBuffer())), hash, id);
  }
  second.child.kill('SIGTERM');
  t.is(await second.exited, 0);
  const after = await checkPictures(dataDir);
  t.is(after.code, 0, JSON.stringify(after.pictures));
  t.true((after.pictures.pictures as number) >= answered.size);
});

test('a SIGKILL between fdatasync and the index commit: the restart indexes the synced tail; a torn tail is cut', async (t) => {
  t.timeout(120_000);
  const dataDir = await tempDir(t);
  const env = { RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: '127.0.0.1:0' };
  const setup = spawnRecorder(t, env);
  await addCamera(await setup.http, 'cut');
  setup.child.kill('SIGTERM');
  t.is(await setup.exited, 0);

  const crashing = spawnRecorder(t, { ...env, RECORDER_CRASH_POINT: 'pictures.after-sync' });
  const pic = await jpeg(300, 200, 3);
  const atMs = Date.now() - 60_000;
  await t.throwsAsync(post(await crashing.http, `camera=cut&at=${atMs}&type=face`, pic), undefined, 'the writer never gets an answer');
  await crashing.exited;
  const synced = await checkPictures(dataDir);
  t.is(synced.code, 1, 'check sees a tail the index lacks');
  t.like(synced.pictures, { indexedTail: [{ pictures: 1 }] });

  // A torn record after it, as a kill inside a write leaves one.
  const packs = (await readdir(join(dataDir, 'pictures', 'default'))).filter((f) => f.endsWith('.pack'));
  t.is(packs.length, 1);
  const packFile = join(dataDir, 'pictures', 'default', packs[0]!);
  const sizeBefore = (await stat(packFile)).size;
  await appendFile(packFile, Buffer.concat([Buffer.from('PIC1\x01\x00\x10', 'latin1'), Buffer.alloc(100, 7)]));

  const restarted = spawnRecorder(t, env);
  const http = await restarted.http;
  const res = await fetch(`${http}/api/pictures/cut.${atMs}.0`);
  t.is(res.status, 200);
  t.deepEqual(Buffer.from(await res.arrayBuffer()), pic);
  t.is((await stat(packFile)).size, sizeBefore, 'the torn record is cut off');
  const next = await post(http, `camera=cut&at=${atMs}`, pic);
  t.is(next.body.seq, 1, 'the next picture at that instant gets the next seq');
  restarted.child.kill('SIGTERM');
  t.is(await restarted.exited, 0);
  const clean = await checkPictures(dataDir);
  t.is(clean.code, 0, JSON.stringify(clean.pictures));
});

/** A 1080p picture with gradients, edges and mild noise: compresses as a camera's does. */
async function scene(w = 1920, h = 1080): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  let x = 12345;
  for (let y = 0; y < h; y++) {
    for (let c = 0; c < w; c++) {
      x = (x * 1103515245 + 12345) >>> 0;
      const n = (x >>> 28) - 8;
      const i = (y * w + c) * 3;
      const block = ((c >> 6) + (y >> 6)) % 2 === 0 ? 40 : 0;
      raw[i] = Math.max(0, Math.min(255, ((c * 255) / w + block + n) | 0));
      raw[i + 1] = Math.max(0, Math.min(255, ((y * 255) / h + n) | 0));
      raw[i + 2] = Math.max(0, Math.min(255, (128 + block - n) | 0));
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

test('previews by URL: scale, width/height/fit, maxBytes (best quality that fits), decoded and measured; bounded cache', async (t) => {
  const { http, node } = await startNode(t, { picturePreviewCacheBytes: 200_000 });
  await addCamera(http, 'yard');
  const pic = await scene();
  const put = await post(http, 'camera=yard&type=alarm', pic);
  t.is(put.status, 200);
  const url = `${http}${put.body.url}`;
  const fetchPreview = async (q: string): Promise<{ status: number; bytes: Buffer; etag: string | null; meta: Metadata | null }> => {
    const res = await fetch(`${url}?${q}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    return { status: res.status, bytes, etag: res.headers.get('etag'), meta: res.status === 200 ? await sharp(bytes).metadata() : null };
  };

  const cases: [string, number, number][] = [
    ['scale=25', 480, 270],
    ['scale=10', 192, 108],
    ['width=320', 320, 180],
    ['height=180', 320, 180],
    ['width=320&height=180&fit=cover', 320, 180],
    ['width=320&height=320', 320, 180],
    ['width=320&height=320&fit=contain', 320, 320],
    ['width=320&height=320&fit=cover', 320, 320],
    ['width=100&height=300&fit=fill', 100, 300],
  ];
  for (const [q, w, h] of cases) {
    const p = await fetchPreview(q);
    t.is(p.status, 200, q);
    t.is(p.meta?.format, 'jpeg', q);
    t.deepEqual([p.meta?.width, p.meta?.height], [w, h], q);
  }

  const small = await fetchPreview('maxBytes=30000');
  t.is(small.status, 200);
  t.true(small.bytes.length <= 30000 && small.bytes.length > 15000, `maxBytes=30000 gave ${small.bytes.length} bytes`);
  t.deepEqual([small.meta?.width, small.meta?.height], [1920, 1080], 'the size is kept while a quality fits');
  const tiny = await fetchPreview('maxBytes=3000');
  t.true(tiny.bytes.length <= 3000, `maxBytes=3000 gave ${tiny.bytes.length} bytes`);
  t.true(tiny.meta!.width < 1920, 'made smaller when no quality fits');
  const both = await fetchPreview('width=640&maxBytes=20000');
  t.true(both.bytes.length <= 20000);
  t.is(both.meta?.width, 640);
  const whole = await fetchPreview(`maxBytes=${pic.length}`);
  t.deepEqual(whole.bytes, pic, 'an original that fits is answered as it is');

  // Same preview: same bytes and ETag, rendered once; other ETag than the original's.
  const rendersBefore = node.service.pictures.previews.renders;
  const again = await fetchPreview('scale=25');
  const again2 = await fetchPreview('scale=25');
  t.deepEqual(again.bytes, again2.bytes);
  t.is(again.etag, again2.etag);
  t.not(again.etag, (await fetch(url)).headers.get('etag'));
  t.is(node.service.pictures.previews.renders - rendersBefore, 0, 'served from the cache');
  t.true(node.service.pictures.previews.size <= 200_000, `cache holds ${node.service.pictures.previews.size} bytes`);
  const ranged = await fetch(`${url}?scale=25`, { headers: { range: 'bytes=0-99' } });
  t.is(ranged.status, 206);
  t.deepEqual(Buffer.from(await ranged.arrayBuffer()), again.bytes.subarray(0, 100));

  for (const q of ['scale=0', 'scale=1000', 'scale=25&width=100', 'width=0', 'fit=cover', 'width=100&fit=squash', 'maxBytes=10', 'colour=red']) {
    const res = await fetch(`${url}?${q}`);
    t.is(res.status, 400, q);
    t.is(((await res.json()) as { error: { code: string } }).error.code, 'VALIDATION_FAILED', q);
  }
});

test('search by cameras, time, type and metadata, paged; the batch ZIP is exact, repeatable and resumes with Range; multipart and NATS writes', async (t) => {
  const node = await startNode(t);
  const { http, dataDir } = node;
  const request = node.request.bind(node);
  await addCamera(http, 'north');
  await addCamera(http, 'south');
  const base = Date.parse('2026-03-02T08:00:00Z');
  const pics = await Promise.all(Array.from({ length: 30 }, (_, i) => jpeg(96 + i, 64, 500 + i)));
  const ids: string[] = [];
  for (const [i, pic] of pics.entries()) {
    const camera = i % 3 === 0 ? 'south' : 'north';
    const type = i % 2 === 0 ? 'anpr' : 'alarm';
    const res = await post(http, `camera=${camera}&at=${base + i * 1000}&type=${type}&meta.plate=P${i % 5}`, pic);
    t.is(res.status, 200);
    ids.push(res.body.id);
  }
  const search = async (q: string): Promise<{ pictures: PutAnswer[]; next: string | null }> => {
    const res = await fetch(`${http}/api/pictures?from=${base}&to=${base + 60_000}&${q}`);
    t.is(res.status, 200, q);
    return (await res.json()) as { pictures: PutAnswer[]; next: string | null };
  };
  t.deepEqual(
    (await search('')).pictures.map((p) => p.id),
    ids,
    'all, in time order',
  );
  t.deepEqual(
    (await search('camera=south')).pictures.map((p) => p.id),
    ids.filter((_, i) => i % 3 === 0),
  );
  t.deepEqual(
    (await search('camera=south,north&type=alarm')).pictures.map((p) => p.id),
    ids.filter((_, i) => i % 2 === 1),
  );
  t.deepEqual(
    (await search('meta.plate=p3')).pictures.map((p) => p.id),
    ids.filter((_, i) => i % 5 === 3),
    'metadata matches regardless of case',
  );
  // Pages of 7: the cursor walks every picture once.
  const paged: string[] = [];
  let after = '';
  for (let n = 0; n < 10; n++) {
    const page = await search(`limit=7${after ? `&after=${after}` : ''}`);
    paged.push(...page.pictures.map((p) => p.id));
    if (!page.next) break;
    after = page.next;
  }
  t.deepEqual(paged, ids);
  for (const q of ['camera=nope', 'limit=0', 'from=x', 'colour=red']) {
    const res = await fetch(`${http}/api/pictures?from=${base}&to=${base + 60_000}&${q}`);
    t.true(res.status === 400 || res.status === 404, `${q}: ${res.status}`);
  }

  // The batch ZIP: exact length, stored entries named by id, the same bytes twice.
  const zipUrl = `${http}/api/pictures/download.zip?camera=north&from=${base}&to=${base + 60_000}`;
  const whole = await fetch(zipUrl);
  t.is(whole.status, 200);
  const zipBytes = Buffer.from(await whole.arrayBuffer());
  t.is(Number(whole.headers.get('content-length')), zipBytes.length);
  const etag = whole.headers.get('etag')!;
  const entries = await readZip(dataDir, zipBytes);
  const north = ids.map((id, i) => [id, i] as const).filter(([, i]) => i % 3 !== 0);
  t.deepEqual(
    entries.map((e) => e.name),
    north.map(([id]) => `${id}.jpg`),
  );
  t.deepEqual(
    entries.map((e) => e.sha),
    north.map(([, i]) => sha(pics[i]!)),
  );
  t.true(entries.every((e) => e.stored));
  const again = Buffer.from(await (await fetch(zipUrl)).arrayBuffer());
  t.deepEqual(again, zipBytes, 'the same request answers the same bytes');
  // A broken download resumed with Range equals the whole.
  const cut = Math.floor(zipBytes.length / 3);
  const head = await fetch(zipUrl, { headers: { range: `bytes=0-${cut - 1}` } });
  t.is(head.status, 206);
  const tail = await fetch(zipUrl, { headers: { range: `bytes=${cut}-`, 'if-range': etag } });
  t.is(tail.status, 206);
  t.is(tail.headers.get('content-range'), `bytes ${cut}-${zipBytes.length - 1}/${zipBytes.length}`);
  t.deepEqual(Buffer.concat([Buffer.from(await head.arrayBuffer()), Buffer.from(await tail.arrayBuffer())]), zipBytes);
  const stale = await fetch(zipUrl, { headers: { range: `bytes=${cut}-`, 'if-range': '"z-stale"' } });
  t.is(stale.status, 200, 'a stale If-Range gets the whole');
  await stale.arrayBuffer();
  // With a preview applied to every picture.
  const scaled = await fetch(`${zipUrl}&scale=50`);
  const scaledBytes = Buffer.from(await scaled.arrayBuffer());
  t.is(Number(scaled.headers.get('content-length')), scaledBytes.length);
  t.deepEqual(
    (await readZip(dataDir, scaledBytes)).map((e) => e.width),
    north.map(([, i]) => Math.round((96 + i) / 2)),
  );

  // Several pictures in one multipart request; a bad part stores none of them.
  const form = new FormData();
  form.append('type', 'face');
  form.append('a', new Blob([pics[0]!], { type: 'image/jpeg' }), 'a.jpg');
  form.append('meta.name', 'visitor');
  form.append('b', new Blob([pics[1]!], { type: 'image/jpeg' }), 'b.jpg');
  const multi = await fetch(`${http}/api/pictures?camera=south&at=${base + 50_000}`, { method: 'POST', body: form });
  t.is(multi.status, 200);
  const stored = ((await multi.json()) as { pictures: PutAnswer[] }).pictures;
  t.like(stored, [
    { type: 'face', seq: 0 },
    { type: 'face', seq: 1, meta: { name: 'visitor' } },
  ]);
  t.is(stored[0]!.meta, undefined);
  t.deepEqual(Buffer.from(await (await fetch(`${http}${stored[1]!.url}`)).arrayBuffer()), pics[1]);
  const before = (await search('limit=1000')).pictures.length;
  const bad = new FormData();
  bad.append('a', new Blob([pics[2]!], { type: 'image/jpeg' }), 'a.jpg');
  bad.append('b', new Blob([pics[3]!.subarray(0, 900)], { type: 'image/jpeg' }), 'b.jpg');
  const refused = await fetch(`${http}/api/pictures?camera=south`, { method: 'POST', body: bad });
  t.is(refused.status, 422);
  t.regex(((await refused.json()) as { error: { message: string } }).error.message, /^part 2: /);
  t.is((await search('limit=1000')).pictures.length, before, 'none of the batch stored');

  // A small picture over NATS.
  const viaNats = await request<{ picture: PutAnswer }>('rec.v1.picture.put', {
    camera: 'north',
    type: 'snapshot',
    meta: { by: 'vms' },
    data: pics[4]!.toString('base64'),
  });
  t.true(viaNats.ok, JSON.stringify(viaNats.error));
  t.like(viaNats.picture, { camera: 'north', type: 'snapshot', meta: { by: 'vms' } });
  t.deepEqual(Buffer.from(await (await fetch(`${http}${viaNats.picture.url}`)).arrayBuffer()), pics[4]);
  const natsBad = await request('rec.v1.picture.put', { camera: 'north', data: Buffer.from('not a jpeg').toString('base64') });
  t.like(natsBad, { ok: false, error: { code: 'PICTURE_INVALID' } });
});

test('search by image: a resized, recompressed or slightly cropped copy finds its original first', async (t) => {
  const { http, node } = await startNode(t);
  await addCamera(http, 'lane');
  // Six different scenes: gradients turned and tinted, blocks of other sizes.
  const scenes = await Promise.all(
    Array.from({ length: 6 }, async (_, k) => {
      const w = 640;
      const h = 360;
      const raw = Buffer.alloc(w * h * 3);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const i = (y * w + x) * 3;
          const block = ((x >> (4 + (k % 3))) + (y >> (4 + (k % 2)))) % 2 === 0 ? 60 : 0;
          const g = k % 2 === 0 ? (x * 255) / w : (y * 255) / h;
          raw[i] = (g + block + k * 30) % 256;
          raw[i + 1] = (255 - g + k * 50) % 256;
          raw[i + 2] = (block * 2 + k * 40) % 256;
        }
      }
      return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer();
    }),
  );
  const ids: string[] = [];
  for (const s of scenes) ids.push((await post(http, 'camera=lane&type=alarm', s)).body.id);
  await waitFor(
    'signatures',
    () => {
      const s = node.pictures!.signer;
      if (s.skipped > 0) throw new Error(`${s.skipped} skipped`);
      return s.signed >= scenes.length && s.pending === 0;
    },
    20_000,
    50,
  );
  const nearCopies = [1, 4].flatMap((k) => [
    { k, copy: sharp(scenes[k]).resize(400).jpeg({ quality: 40 }).toBuffer() },
    // Slightly cropped (2 % off each edge) and recompressed.
    { k, copy: sharp(scenes[k]).extract({ left: 13, top: 7, width: 614, height: 346 }).jpeg({ quality: 70 }).toBuffer() },
  ]);
  for (const near of nearCopies) {
    const k = near.k;
    const copy = await near.copy;
    const res = await fetch(`${http}/api/pictures/similar?camera=lane&limit=3`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: copy });
    t.is(res.status, 200);
    const { matches } = (await res.json()) as { matches: (PutAnswer & { score: number })[] };
    t.is(matches.length, 3);
    t.is(matches[0]!.id, ids[k]!, JSON.stringify(matches.map((m) => [m.id, m.score])));
    t.true(matches[0]!.score > matches[1]!.score);
  }
  const bad = await fetch(`${http}/api/pictures/similar`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: Buffer.from('nope') });
  t.is(bad.status, 422);
});
