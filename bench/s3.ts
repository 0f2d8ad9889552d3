/**
 * The S3 listener (issue 17), each figure beside a baseline run at the same time on the
 * same disk:
 *   1. 1 GB PUT and GET: the recorder (curl to a presigned URL; the object written,
 *      fdatasync'ed, renamed, cataloged; read back to /dev/null) against `cat` of the
 *      same file through a loopback socket into `dd … conv=fdatasync` (PUT) and out of
 *      the file into `cat > /dev/null` (GET). Rounds alternate sides; page cache dropped
 *      before each GET when the machine lets us. Goal: ≥ 0.8x.
 *   2. 4 kB objects per second, PUT and GET, 16 at a time, each PUT durable before its
 *      answer: against the same durability order done by hand (write, fdatasync, rename,
 *      fsync the folder) and plain reads of those files.
 *   3. Listing a bucket of 1 million keys by pages of 1000 over HTTP (ListObjectsV2 with
 *      continuation tokens): per-page latency p50/p99, beside the catalog's own page read
 *      in-process. Goal: p99 ≤ 20 ms.
 * Run: node --import tsx bench/s3.ts [--gb 1] [--rounds 3] [--seconds 10] [--keys 1000000]
 */
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { freePort } from '../lib/nats-embedded.ts';
import { outDir, percentile, requireWork, timedLoops, startRecorder, type RecorderChild } from './harness.ts';

const { values } = parseArgs({
  options: {
    gb: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '10' },
    keys: { type: 'string', default: '1000000' },
  },
});
const BYTES = Math.round(Number(values.gb) * 1e9);
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const KEYS = Number(values.keys);
const KEY = 'AKIDBENCH';
const SECRET = 'bench-secret-key-0123456789';

/** Spawns now (the child has its own copies of the descriptors once this returns); resolves at a clean exit. */
function exitOf(cmd: string, args: string[], stdio: (Socket | number | 'ignore' | 'inherit')[]): Promise<void> {
  const c = spawn(cmd, args, { stdio: stdio as never });
  return new Promise((resolve, reject) => {
    c.once('error', reject);
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

/** A connected loopback socket pair (the baseline's pipe). */
async function socketPair(): Promise<[Socket, Socket]> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const client = connect(port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', () => r()));
  const server = await accepted;
  srv.close();
  return [client, server];
}

async function dropCaches(): Promise<boolean> {
  try {
    await writeFile('/proc/sys/vm/drop_caches', '1');
    return true;
  } catch {
    return false;
  }
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function catPut(src: string, dest: string): Promise<void> {
  const [a, b] = await socketPair();
  const out = await open(dest, 'w');
  const done = Promise.all([exitOf('cat', [src], ['ignore', a, 'inherit']), exitOf('dd', ['bs=1M', 'conv=fdatasync', 'status=none'], [b, out.fd, 'inherit'])]);
  // Our copies closed: the receiver sees end-of-file when cat exits.
  a.destroy();
  b.destroy();
  await out.close();
  await done;
}

async function catGet(src: string): Promise<void> {
  const [a, b] = await socketPair();
  const done = Promise.all([exitOf('cat', [src], ['ignore', a, 'inherit']), exitOf('sh', ['-c', 'cat > /dev/null'], [b, 'inherit', 'inherit'])]);
  a.destroy();
  b.destroy();
  await done;
}

async function bigFile(path: string): Promise<void> {
  const out = createWriteStream(path);
  const chunk = randomBytes(4 * 1024 * 1024);
  for (let n = 0; n < BYTES; n += chunk.length) {
    // A fresh first word per chunk: no two chunks alike (nothing deduplicates or compresses them).
    randomBytes(8).copy(chunk);
    if (!out.write(n + chunk.length > BYTES ? chunk.subarray(0, BYTES - n) : Buffer.from(chunk))) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r) => out.end(() => r()));
}

async function throughput(dir: string, s3: S3Client): Promise<Record<string, unknown>> {
  const src = join(dir, 'big.bin');
  await bigFile(src);
  const put = { recorder: [] as number[], cat: [] as number[] };
  const get = { recorder: [] as number[], cat: [] as number[] };
  let dropped = true;
  for (let i = 0; i < ROUNDS; i++) {
    const url = await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'bench', Key: `big-${i}` }), { expiresIn: 3600 });
    put.recorder.push(await timed(() => exitOf('curl', ['-sf', '-T', src, '-o', '/dev/null', url], ['ignore', 'inherit', 'inherit'])));
    put.cat.push(await timed(() => catPut(src, join(dir, `cat-${i}.bin`))));
    const getUrl = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'bench', Key: `big-${i}` }), { expiresIn: 3600 });
    dropped = (await dropCaches()) && dropped;
    get.recorder.push(await timed(() => exitOf('curl', ['-sf', '-o', '/dev/null', getUrl], ['ignore', 'inherit', 'inherit'])));
    dropped = (await dropCaches()) && dropped;
    get.cat.push(await timed(() => catGet(join(dir, `cat-${i}.bin`))));
    await rm(join(dir, `cat-${i}.bin`));
  }
  const head = await s3.send(new GetObjectCommand({ Bucket: 'bench', Key: 'big-0', Range: 'bytes=0-0' }));
  requireWork('s3 1 GB', head.ContentRange === `bytes 0-0/${BYTES}` ? [] : [`the recorder holds ${head.ContentRange ?? 'nothing'} for big-0`]);
  const mbps = (s: number[]): number => Math.round(BYTES / 1e6 / percentile(s, 50));
  return {
    bytes: BYTES,
    rounds: ROUNDS,
    pageCacheDropped: dropped,
    putMBps: { recorder: mbps(put.recorder), cat: mbps(put.cat), ratio: +(mbps(put.recorder) / mbps(put.cat)).toFixed(2) },
    getMBps: { recorder: mbps(get.recorder), cat: mbps(get.cat), ratio: +(mbps(get.recorder) / mbps(get.cat)).toFixed(2) },
  };
}

/** URLs signed ahead for each of the 16 small-PUT loops (~1500/s in all for 10 s fits). */
const PRESIGNED_PER_WORKER = Math.ceil((SECONDS * 2000) / 16);

async function small(dir: string, s3: S3Client): Promise<Record<string, unknown>> {
  let agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const body = randomBytes(4096);
  const send = (method: string, url: string, payload?: Buffer): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = request(url, { method, agent, headers: payload ? { 'content-length': payload.length } : {} }, (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
      });
      req.once('error', reject);
      req.end(payload);
    });
  let failed = 0;
  // Signed before the clock starts: the client's signing is not the recorder's cost (it
  // was ~half the time of a 4 kB PUT's loop when signed inside it).
  const presigned = Array.from({ length: 16 }, () => [] as { key: string; url: string }[]);
  for (let w = 0; w < 16; w++) {
    for (let i = 0; i < PRESIGNED_PER_WORKER; i++) {
      const key = `s/${w}/${i}`;
      presigned[w]!.push({ key, url: await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'bench', Key: key }), { expiresIn: 3600 }) });
    }
  }
  const putUrls = new Map<string, string>();
  let ranOut = false;
  const recorderPut = await timedLoops(16, SECONDS, async (w, i) => {
    const next = presigned[w]![i];
    if (!next) {
      ranOut = true;
      return;
    }
    if ((await send('PUT', next.url, body)) !== 200) failed++;
    putUrls.set(next.key, next.url);
  });
  requireWork('s3 4 kB', ranOut ? [`a PUT loop used all its ${PRESIGNED_PER_WORKER} pre-signed URLs: raise PRESIGNED_PER_WORKER`] : []);
  const folder = join(dir, 'small');
  await mkdir(folder, { recursive: true });
  const dirHandle = await open(folder, 'r');
  const basePut = await timedLoops(16, SECONDS, async (w, i) => {
    const tmp = join(folder, `.${w}-${i}`);
    const f = await open(tmp, 'wx');
    await f.write(body);
    await f.datasync();
    await f.close();
    await rename(tmp, join(folder, `${w}-${i}`));
    await dirHandle.sync();
  });
  await dirHandle.close();
  const keys = [...putUrls.keys()];
  const getUrls = await Promise.all(keys.slice(0, 5000).map((k) => getSignedUrl(s3, new GetObjectCommand({ Bucket: 'bench', Key: k }), { expiresIn: 3600 })));
  // Signing the GETs takes seconds: sockets idle that long may be closed by the server's
  // keep-alive timeout just as a request is sent on them (a hang-up): new ones for the GETs.
  agent.destroy();
  agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const recorderGet = await timedLoops(16, SECONDS, async (w, i) => {
    if ((await send('GET', getUrls[(w * 7919 + i) % getUrls.length]!)) !== 200) failed++;
  });
  const baseGet = await timedLoops(16, SECONDS, async (w, i) => {
    await readFile(join(folder, `${w}-${i % Math.max(1, Math.floor(basePut.n / 16))}`)).catch(() => undefined);
  });
  agent.destroy();
  requireWork('s3 4 kB', [...(recorderPut.n === 0 ? ['no PUT answered'] : []), ...(failed > 0 ? [`${failed} requests failed`] : [])]);
  return { workers: 16, seconds: SECONDS, put: { recorder: recorderPut, byHand: basePut }, get: { recorder: recorderGet, plainRead: baseGet } };
}

async function listing(dir: string): Promise<Record<string, unknown>> {
  const dataDir = join(dir, 'list-data');
  const index = await RecorderIndex.open(dataDir);
  const t0 = performance.now();
  await index.buckets.createBucket({ name: 'million', pool: 'default', createdMs: Date.now(), acl: 'private', owner: 'root' });
  const BATCH = 10_000;
  for (let n = 0; n < KEYS; n += BATCH) {
    const writes: Promise<unknown>[] = [];
    for (let i = n; i < Math.min(KEYS, n + BATCH); i++) {
      const key = `cam${String(i % 100).padStart(3, '0')}/2026/${String(i).padStart(8, '0')}.mp4`;
      writes.push(
        index.buckets.putObject('million', key, {
          fileId: `f${i}`,
          size: 4096,
          etag: 'd41d8cd98f00b204e9800998ecf8427e',
          lastModifiedMs: Date.now(),
          headers: {},
          meta: {},
        }),
      );
    }
    await Promise.all(writes);
  }
  const fillS = (performance.now() - t0) / 1000;
  // The catalog's own page read, in-process (the floor under HTTP and XML).
  const inProcess: number[] = [];
  let after: { value: string; prefix: boolean } | undefined;
  let listed = 0;
  for (;;) {
    const t = performance.now();
    const page = index.buckets.list('million', { prefix: '', delimiter: '', maxKeys: 1000, ...(after ? { after } : {}) });
    inProcess.push(performance.now() - t);
    listed += page.objects.length;
    if (!page.truncated) break;
    after = page.last;
  }
  await index.close();
  requireWork('s3 listing (catalog)', listed === KEYS ? [] : [`listed ${listed} of ${KEYS}`]);
  const port = await freePort();
  const rec: RecorderChild = await startRecorder(dataDir, { RECORDER_S3: `127.0.0.1:${port}`, RECORDER_S3_ACCESS_KEY: KEY, RECORDER_S3_SECRET_KEY: SECRET });
  try {
    const s3 = new S3Client({
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    });
    const overHttp: number[] = [];
    let token: string | undefined;
    let httpListed = 0;
    for (;;) {
      const url = await getSignedUrl(s3, new ListObjectsV2Command({ Bucket: 'million', MaxKeys: 1000, ...(token ? { ContinuationToken: token } : {}) }), {
        expiresIn: 3600,
      });
      const t = performance.now();
      const res = await fetch(url);
      const xml = await res.text();
      overHttp.push(performance.now() - t);
      if (res.status !== 200) throw new Error(`list: ${res.status} ${xml.slice(0, 200)}`);
      httpListed += (xml.match(/<Key>/g) ?? []).length;
      const next = /<NextContinuationToken>([^<]+)<\/NextContinuationToken>/.exec(xml);
      if (!next) break;
      token = next[1];
    }
    s3.destroy();
    requireWork('s3 listing (http)', httpListed === KEYS ? [] : [`listed ${httpListed} of ${KEYS} over HTTP`]);
    const fig = (xs: number[]): Record<string, number> => ({
      pages: xs.length,
      p50Ms: +percentile(xs, 50).toFixed(2),
      p99Ms: +percentile(xs, 99).toFixed(2),
      maxMs: +Math.max(...xs).toFixed(2),
    });
    return { keys: KEYS, fillSeconds: +fillS.toFixed(1), http: fig(overHttp), catalogInProcess: fig(inProcess) };
  } finally {
    await rec.stop();
  }
}

async function main(): Promise<void> {
  await mkdir(outDir, { recursive: true });
  const dir = await mkdtemp(join(outDir, 's3-'));
  let rec: RecorderChild | null = null;
  try {
    const port = await freePort();
    rec = await startRecorder(join(dir, 'data'), { RECORDER_S3: `127.0.0.1:${port}`, RECORDER_S3_ACCESS_KEY: KEY, RECORDER_S3_SECRET_KEY: SECRET });
    const s3url = `http://127.0.0.1:${port}`;
    const s3 = new S3Client({ endpoint: s3url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: KEY, secretAccessKey: SECRET } });
    for (let i = 0; ; i++) {
      try {
        await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
        break;
      } catch (err) {
        if (i > 50) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const big = await throughput(dir, s3);
    console.log(JSON.stringify({ bench: 's3', throughput: big }));
    const smallFig = await small(dir, s3);
    console.log(JSON.stringify({ bench: 's3', small4k: smallFig }));
    s3.destroy();
    await rec.stop();
    rec = null;
    const list = await listing(dir);
    console.log(JSON.stringify({ bench: 's3', listing: list }));
  } finally {
    await rec?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? `${err.name}: ${err.message}` : err);
  process.exit(1);
});
