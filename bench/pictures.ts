/**
 * Picture storage (issue 16), each figure beside a baseline on the same machine and
 * disk, rounds alternating sides:
 *   1. Writes per second of 200 kB JPEGs, 32 writers at once, each answered only once
 *      durable: the recorder (HTTP POST /api/pictures: pack append, group fdatasync,
 *      one index commit per batch), and its picture storage alone in this process (no
 *      HTTP: where the time goes), against one file per picture done by hand in this
 *      process (create, write, fdatasync, fsync the folder), 32 at once. Goals: ≥ 1000/s
 *      and ≥ 5x the baseline.
 *   2. Original read latency over HTTP (GET /api/pictures/:id, one at a time, random
 *      pictures): p50/p99 against readFile of the baseline's files. Goal: p99 ≤ 5 ms.
 *   3. Preview of a 1080p JPEG to 320 px (pictures/preview.ts, in this process, no
 *      cache): p50 against a full decode of the same JPEG. Goal: p50 ≤ 15 ms.
 *   5. Search by image over --signatures signatures (default 1 million) put into an
 *      index directly: the scan `POST /api/pictures/similar` does (read each signature,
 *      score it, keep the best 10), p50 over 5 runs. Goal: ≤ 100 ms.
 *   4. Index bytes per picture: the LMDB pages of the picture databases over the
 *      pictures they hold, after the run. Goal: ≤ 80.
 * Run: node --import tsx bench/pictures.ts [--seconds 10] [--rounds 3] [--writers 32]
 */
import { randomBytes, randomInt } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { RecorderIndex } from '../index/db.ts';
import type { PackRecord, PictureKey } from '../index/pictures.ts';
import { SIGNATURE_BYTES, signatureOf, similarity } from '../pictures/signature.ts';
import { SignatureIndex } from '../pictures/signature-index.ts';
import { inspectJpeg } from '../pictures/jpeg.ts';
import { renderPreview } from '../pictures/preview.ts';
import { PictureStorage } from '../pictures/picture-storage.ts';
import { createLogger } from '../lib/log.ts';
import { systemClock } from '../lib/time.ts';
import { outDir, percentile, putJson, requireWork, startRecorder } from './harness.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    writers: { type: 'string', default: '32' },
    signatures: { type: 'string', default: '1000000' },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const WRITERS = Number(values.writers);
const SIGNATURES = Number(values.signatures);
const PICTURE_BYTES = 200_000;

/** A JPEG of noise of about `bytes` (noise does not compress: its size follows its pixels). */
async function noiseJpeg(bytes: number, seed: number): Promise<Buffer> {
  let w = 400;
  let h = 300;
  for (;;) {
    const raw = Buffer.alloc(w * h * 3);
    let x = seed * 2654435761;
    for (let i = 0; i < raw.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      raw[i] = x >>> 24;
    }
    const jpg = await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 85 })
      .toBuffer();
    if (Math.abs(jpg.length - bytes) < bytes * 0.05) return jpg;
    const f = Math.sqrt(bytes / jpg.length);
    w = Math.round(w * f);
    h = Math.round(h * f);
  }
}

/** A 1080p picture with gradients, edges and mild noise (as a camera's). */
async function scene1080(): Promise<Buffer> {
  const w = 1920;
  const h = 1080;
  const raw = Buffer.alloc(w * h * 3);
  let x = 7;
  for (let y = 0; y < h; y++) {
    for (let c = 0; c < w; c++) {
      x = (x * 1103515245 + 12345) >>> 0;
      const n = (x >>> 28) - 8;
      const i = (y * w + c) * 3;
      const block = ((c >> 5) + (y >> 5)) % 2 === 0 ? 50 : 0;
      raw[i] = Math.max(0, Math.min(255, ((c * 255) / w + block + n) | 0));
      raw[i + 1] = Math.max(0, Math.min(255, ((y * 255) / h + n) | 0));
      raw[i + 2] = Math.max(0, Math.min(255, (128 + block - n) | 0));
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 85 })
    .toBuffer();
}

const agent = new Agent({ keepAlive: true, maxSockets: WRITERS });

function http(method: string, url: string, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent, headers: body ? { 'content-type': 'image/jpeg', 'content-length': body.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Runs `one` in WRITERS loops for SECONDS; returns how many completed. */
async function flood(one: (n: number) => Promise<void>): Promise<number> {
  const until = performance.now() + SECONDS * 1000;
  let done = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (performance.now() < until) {
        await one(next++);
        done++;
      }
    }),
  );
  return done;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  await fh.sync();
  await fh.close();
}

async function main(): Promise<void> {
  await mkdir(outDir, { recursive: true });
  const work = await mkdtemp(join(outDir, 'pictures-'));
  const pics = await Promise.all(Array.from({ length: 8 }, (_, i) => noiseJpeg(PICTURE_BYTES, i + 1)));
  const rec = await startRecorder(join(work, 'data'));
  const problems: string[] = [];
  try {
    await putJson(`${rec.http}/api/cameras/bench`, { streams: { main: 'rtsp://127.0.0.1:9/none' } });
    const ids: string[] = [];
    const baseDir = join(work, 'files');
    await mkdir(baseDir, { recursive: true });
    const files: string[] = [];
    const rates = { recorder: [] as number[], storage: [] as number[], baseline: [] as number[] };
    // The recorder's storage alone (no HTTP), in this process on its own data dir: where the time goes.
    const storeDir = join(work, 'storage');
    await mkdir(storeDir, { recursive: true });
    const storeIndex = await RecorderIndex.open(storeDir);
    const storage = new PictureStorage({
      index: storeIndex,
      dataDir: storeDir,
      clock: systemClock,
      log: createLogger('silent'),
      packMaxBytes: 256 * 1024 ** 2,
      packMaxAgeMs: 3_600_000,
    });
    let stored = 0;
    let failed = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const t0 = performance.now();
      const n = await flood(async (i) => {
        const res = await http('POST', `${rec.http}/api/pictures?camera=bench&type=alarm&meta.n=${i}`, pics[i % pics.length]);
        if (res.status !== 200) failed++;
        else ids.push((JSON.parse(res.body.toString()) as { id: string }).id);
      });
      rates.recorder.push(n / ((performance.now() - t0) / 1000));
      const ts = performance.now();
      const k = await flood(async (i) => {
        await storage.put({ camera: 'bench', pool: 'default', atMs: Date.now(), type: 'alarm', meta: { n: String(i) }, bytes: pics[i % pics.length]! });
        stored++;
      });
      rates.storage.push(k / ((performance.now() - ts) / 1000));
      const t1 = performance.now();
      const m = await flood(async (i) => {
        const file = join(baseDir, `${round}-${i}.jpg`);
        const fh = await open(file, 'wx');
        await fh.writeFile(pics[i % pics.length]!);
        await fh.datasync();
        await fh.close();
        await fsyncDir(baseDir);
        files.push(file);
      });
      rates.baseline.push(m / ((performance.now() - t1) / 1000));
    }
    requireWork('pictures', [...(ids.length === 0 ? ['the recorder stored no picture'] : []), ...(failed > 0 ? [`${failed} writes were refused`] : [])]);
    requireWork('pictures', files.length === 0 ? ['the baseline wrote no file'] : []);
    requireWork('pictures', stored === 0 ? ['the storage alone stored nothing'] : []);
    await storage.stop();
    await storeIndex.close();

    // Reads: one at a time, random pictures, rounds alternating.
    const reads = { recorder: [] as number[], baseline: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < 500; i++) {
        const id = ids[randomInt(ids.length)]!;
        const t = performance.now();
        const res = await http('GET', `${rec.http}/api/pictures/${id}`);
        reads.recorder.push(performance.now() - t);
        if (res.status !== 200 || res.body.length < 1000) problems.push(`GET ${id}: ${res.status}`);
      }
      for (let i = 0; i < 500; i++) {
        const t = performance.now();
        await readFile(files[randomInt(files.length)]!);
        reads.baseline.push(performance.now() - t);
      }
    }
    requireWork('pictures', problems.slice(0, 5));

    // Previews of a 1080p JPEG to 320 px, against a full decode of it.
    const big = await scene1080();
    const size = inspectJpeg(big);
    const preview: number[] = [];
    const decode: number[] = [];
    for (let i = 0; i < 60; i++) {
      let t = performance.now();
      const p = await renderPreview(big, size, { width: 320, fit: 'inside' });
      preview.push(performance.now() - t);
      if ((await sharp(p).metadata()).width !== 320) problems.push('the preview is not 320 px wide');
      t = performance.now();
      await sharp(big).raw().toBuffer();
      decode.push(performance.now() - t);
    }
    requireWork('pictures', problems.slice(0, 5));
    await rec.stop();

    const index = await RecorderIndex.open(join(work, 'data'));
    const count = index.pictures.count();
    const indexBytes = index.pictures.indexBytes();
    await index.close();
    requireWork('pictures', count < ids.length ? [`the index holds ${count} pictures, ${ids.length} were answered`] : []);

    // Search by image over many signatures (the scan of POST /api/pictures/similar).
    const sigDir = join(work, 'signatures');
    await mkdir(sigDir, { recursive: true });
    const sigIndex = await RecorderIndex.open(sigDir);
    const t0 = Date.UTC(2026, 0, 1);
    const pack: PackRecord = { id: 1, pool: 'default', file: 'x', bytes: 0, count: 0, createdMs: t0, closed: true, range: null };
    for (let b = 0; b < SIGNATURES; b += 10_000) {
      const n = Math.min(10_000, SIGNATURES - b);
      const entries = Array.from({ length: n }, (_, i) => ({
        key: [`cam${(b + i) % 50}`, t0 + (b + i) * 10, 0] as PictureKey,
        entry: { pack: 1, offset: 0, length: 1, type: 'alarm' },
      }));
      await sigIndex.pictures.append(pack, entries);
      await sigIndex.pictures.putSignatures(entries.map((e) => ({ key: e.key, signature: randomBytes(SIGNATURE_BYTES) })));
    }
    const query = await signatureOf(pics[0]!);
    const scans: number[] = [];
    let scanned = 0;
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const best: number[] = [];
      scanned = 0;
      for (const { signature } of sigIndex.pictures.signatures(0, Number.MAX_SAFE_INTEGER, SIGNATURE_BYTES)) {
        scanned++;
        const score = similarity(query, signature);
        if (best.length < 10 || score > best[9]!) {
          best.push(score);
          best.sort((a, b) => b - a);
          if (best.length > 10) best.pop();
        }
      }
      scans.push(performance.now() - t);
    }
    // The same search through the in-memory signature index the service uses (pictures/signature-index.ts).
    const mem = new SignatureIndex(sigIndex.pictures);
    const loadStart = performance.now();
    mem.best(query, 0, 1, 1, () => true); // the first search loads every signature
    const memLoadMs = performance.now() - loadStart;
    const memScans: number[] = [];
    let memBest = 0;
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      memBest = mem.best(query, 0, Number.MAX_SAFE_INTEGER, 10, () => true).length;
      memScans.push(performance.now() - t);
    }
    const memRss = process.memoryUsage().rss;
    await sigIndex.close();
    requireWork('pictures', mem.size < SIGNATURES || memBest !== 10 ? [`the in-memory index held ${mem.size} signatures and found ${memBest}`] : []);
    requireWork('pictures', scanned < SIGNATURES ? [`the scan read ${scanned} of ${SIGNATURES} signatures`] : []);

    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const r = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
    console.log(
      JSON.stringify(
        {
          pictureBytes: pics[0]!.length,
          writers: WRITERS,
          writesPerSecond: {
            recorder: rates.recorder.map((x) => r(x, 0)),
            storageAlone: rates.storage.map((x) => r(x, 0)),
            baseline: rates.baseline.map((x) => r(x, 0)),
            ratio: r(mean(rates.recorder) / mean(rates.baseline), 2),
            storageAloneRatio: r(mean(rates.storage) / mean(rates.baseline), 2),
          },
          readMs: {
            recorder: { p50: r(percentile(reads.recorder, 50), 2), p99: r(percentile(reads.recorder, 99), 2) },
            baseline: { p50: r(percentile(reads.baseline, 50), 2), p99: r(percentile(reads.baseline, 99), 2) },
          },
          preview1080To320Ms: { p50: r(percentile(preview, 50), 2), p99: r(percentile(preview, 99), 2), fullDecodeP50: r(percentile(decode, 50), 2) },
          index: { pictures: count, bytesPerPicture: r(indexBytes / count, 1) },
          searchByImage: {
            signatures: SIGNATURES,
            scanMs: { p50: r(percentile(scans, 50), 1), max: r(Math.max(...scans), 1) },
            inMemoryMs: { p50: r(percentile(memScans, 50), 1), max: r(Math.max(...memScans), 1), loadMs: r(memLoadMs, 0), rssMb: r(memRss / 1e6, 0) },
          },
        },
        null,
        2,
      ),
    );
  } finally {
    await rec.stop();
    agent.destroy();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
