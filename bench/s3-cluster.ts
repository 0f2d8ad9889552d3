/**
 * What a cluster costs S3 clients (bench/README.md "bench/s3-cluster"): the same
 * operations, in one run, against one recorder alone (the baseline) and through a
 * cluster of three recorders on three clustered nats-servers with the bucket in a pool of
 * `copies: 2`. 4 kB PUTs and GETs per second (PUTs through node a, GETs through node c,
 * which holds a copy of about a third of them), a 16 MB PUT (answered in the cluster once
 * its second copy is pulled), and a key written through a read through c at once.
 *
 *   node --import tsx bench/s3-cluster.ts          # --seconds 5 --rounds 3
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from '../lib/nats-embedded.ts';
import { startNatsCluster, type NatsCluster } from '../sim/nats-cluster.ts';
import { BenchFailure, outDir, percentile, putJson, requireWork, sleep, startRecorder, timedLoops, type RecorderChild } from './harness.ts';

const { values: args } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' } } });
const SECONDS = Number(args.seconds);
const ROUNDS = Number(args.rounds);
const KEY = 'AKIDBENCHCLUSTER';
const SECRET = 'bench-cluster-secret-key-0123456789';
const WORKERS = 8;

interface Side {
  /** Where PUTs go, and where GETs and the read-after-write reads go. */
  writer: S3Client;
  reader: S3Client;
}

function client(url: string): S3Client {
  return new S3Client({ endpoint: url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: KEY, secretAccessKey: SECRET }, maxAttempts: 1 });
}

async function node(dir: string, name: string, extra: Record<string, string> = {}): Promise<{ rec: RecorderChild; s3: string }> {
  const port = await freePort();
  const rec = await startRecorder(join(dir, name), { RECORDER_S3: `127.0.0.1:${port}`, RECORDER_S3_ACCESS_KEY: KEY, RECORDER_S3_SECRET_KEY: SECRET, ...extra });
  return { rec, s3: `http://127.0.0.1:${port}` };
}

/** Retries `fn` until it resolves (the cluster binding its streams), at most `ms`. */
async function until<T>(what: string, fn: () => Promise<T>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw new BenchFailure(what, [(err as Error).message]);
      await sleep(500);
    }
  }
}

async function measure(side: Side, tag: string): Promise<Record<string, unknown>> {
  const small = randomBytes(4096);
  const written: string[] = [];
  const put = await timedLoops(WORKERS, SECONDS, async (w, i) => {
    const key = `${tag}/s/${w}/${i}`;
    await side.writer.send(new PutObjectCommand({ Bucket: 'bench', Key: key, Body: small }));
    written.push(key);
  });
  const get = await timedLoops(WORKERS, SECONDS, async (w, i) => {
    const res = await side.reader.send(new GetObjectCommand({ Bucket: 'bench', Key: written[(w * 7919 + i) % written.length] }));
    await res.Body!.transformToByteArray();
  });
  const big = randomBytes(16 * 1024 * 1024);
  const bigMs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    await side.writer.send(new PutObjectCommand({ Bucket: 'bench', Key: `${tag}/big/${r}`, Body: big }));
    bigMs.push(performance.now() - t0);
  }
  // A key written through the writer, read through the reader at once: the pair's time, and any miss.
  const pairMs: number[] = [];
  let missed = 0;
  for (let i = 0; i < 200; i++) {
    const key = `${tag}/raw/${i}`;
    const t0 = performance.now();
    await side.writer.send(new PutObjectCommand({ Bucket: 'bench', Key: key, Body: small }));
    try {
      await (await side.reader.send(new GetObjectCommand({ Bucket: 'bench', Key: key }))).Body!.transformToByteArray();
    } catch {
      missed++;
    }
    pairMs.push(performance.now() - t0);
  }
  requireWork(tag, [
    ...(put.n === 0 ? ['no PUT answered'] : []),
    ...(missed > 0 ? [`${missed} of 200 keys not readable through the other node right after their PUT`] : []),
  ]);
  const sorted = [...bigMs].sort((a, b) => a - b);
  return {
    put4k: put,
    get4k: get,
    put16MB: { mbPerSecond: +(16 / (sorted[Math.floor(sorted.length / 2)]! / 1000)).toFixed(1), rounds: ROUNDS },
    putThenGet: { p50Ms: +percentile(pairMs, 50).toFixed(1), p99Ms: +percentile(pairMs, 99).toFixed(1), missed },
  };
}

async function main(): Promise<void> {
  await mkdir(outDir, { recursive: true });
  const dir = await mkdtemp(join(outDir, 's3-cluster-'));
  const recs: RecorderChild[] = [];
  const clients: S3Client[] = [];
  let nats: NatsCluster | null = null;
  try {
    // The baseline: one recorder, no cluster.
    const alone = await node(dir, 'alone');
    recs.push(alone.rec);
    const one = client(alone.s3);
    clients.push(one);
    await until('baseline bucket', () => one.send(new CreateBucketCommand({ Bucket: 'bench' })));

    // The cluster: three nats-servers, three recorders, a copies-2 pool.
    nats = await startNatsCluster({ dir: join(dir, 'nats') });
    const nodes = await Promise.all(['a', 'b', 'c'].map((n) => node(dir, n, { RECORDER_NATS_URL: nats!.urls })));
    recs.push(...nodes.map((n) => n.rec));
    const [a, , c] = nodes.map((n) => client(n.s3)) as [S3Client, S3Client, S3Client];
    clients.push(a, c);
    await until('the copies-2 pool', () => putJson(`${nodes[0]!.rec.http}/api/pools/dup`, { capacityBytes: null, overwrite: 'capacity', copies: 2 }));
    await until('the cluster bucket', () =>
      a.send(new CreateBucketCommand({ Bucket: 'bench', CreateBucketConfiguration: { LocationConstraint: 'dup' as never } })),
    );
    // Ready when a key put through a reads through c (tokens and streams bound).
    await until('a key read through another node', async () => {
      await a.send(new PutObjectCommand({ Bucket: 'bench', Key: 'ready', Body: 'ready' }));
      await (await c.send(new GetObjectCommand({ Bucket: 'bench', Key: 'ready' }))).Body!.transformToByteArray();
    });

    const baseline = await measure({ writer: one, reader: one }, 'alone');
    const cluster = await measure({ writer: a, reader: c }, 'cluster');
    console.log(JSON.stringify({ bench: 's3-cluster', seconds: SECONDS, workers: WORKERS, baseline, cluster }));
    const ratio = (x: number, y: number): string => (x / y).toFixed(2);
    const f = (
      s: Record<string, unknown>,
    ): { put: { perSecond: number; p99Ms: number }; get: { perSecond: number; p99Ms: number }; big: number; pair: { p50Ms: number; p99Ms: number } } => ({
      put: s.put4k as { perSecond: number; p99Ms: number },
      get: s.get4k as { perSecond: number; p99Ms: number },
      big: (s.put16MB as { mbPerSecond: number }).mbPerSecond,
      pair: s.putThenGet as { p50Ms: number; p99Ms: number },
    });
    const [b, k] = [f(baseline), f(cluster)];
    console.log('| figure | one node | cluster of three (copies 2) | ratio |');
    console.log('| --- | --- | --- | --- |');
    console.log(
      `| 4 kB PUT, objects/s (p99) | ${b.put.perSecond} (${b.put.p99Ms} ms) | ${k.put.perSecond} (${k.put.p99Ms} ms) | ${ratio(k.put.perSecond, b.put.perSecond)} |`,
    );
    console.log(
      `| 4 kB GET, objects/s (p99) | ${b.get.perSecond} (${b.get.p99Ms} ms) | ${k.get.perSecond} (${k.get.p99Ms} ms) | ${ratio(k.get.perSecond, b.get.perSecond)} |`,
    );
    console.log(`| 16 MB PUT, MB/s | ${b.big} | ${k.big} | ${ratio(k.big, b.big)} |`);
    console.log(`| 4 kB PUT then GET, p50 / p99 ms | ${b.pair.p50Ms} / ${b.pair.p99Ms} | ${k.pair.p50Ms} / ${k.pair.p99Ms} | |`);
  } finally {
    for (const cl of clients) cl.destroy();
    await Promise.all(recs.map((r) => r.stop()));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? `${err.name}: ${err.message}` : err);
  process.exit(1);
});
