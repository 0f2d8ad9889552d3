/**
 * S3 buckets in a cluster through real processes (docs/design/buckets.md "In a cluster"):
 * three nats-servers clustered on loopback, three recorders with their S3 listeners, the
 * AWS SDK. A bucket made on one node is seen by every node; objects put through two
 * nodes are listed and read byte for byte through the third, which may hold none of
 * them; a pool with `copies: 2` keeps each object file on exactly two nodes; a delete
 * through one node removes the object's files on every node; two nodes creating one
 * bucket name at once: one wins. The writer killed with SIGKILL, every object is still
 * read through a survivor and its lost copy is re-made; back, the surplus copies go, and
 * files it has of changes it had not applied survive its start-up sweep.
 */
import test from 'ava';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { copyFile, mkdir, open, readFile, stat, utimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  ListPartsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { readFooter } from '../buckets/object-files.ts';
import { copyHolders } from '../cluster/copy-plan.ts';
import { objectCopyKey } from '../cluster/object-copies.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';
import { S3_KEY, S3_SECRET, s3Client, s3Code } from './helpers/s3.ts';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Waits until the nodes hold `want` object files of `bucket` in all; the counts are in the message when they do not. */
async function untilFiles(
  nodes: readonly ClusterNodeProcess[],
  bucket: string,
  what: string,
  want: (counts: number[]) => boolean,
  timeoutMs = 60_000,
): Promise<void> {
  try {
    await waitFor(what, () => want(nodes.map((n) => filesOn(n, bucket))), timeoutMs, 250);
  } catch (err) {
    throw new Error(`${(err as Error).message} (files per node: ${nodes.map((n) => `${n.name} ${filesOn(n, bucket)}`).join(', ')})`);
  }
}

/** The files on the nodes' disks that hold `key` of `bucket` (read from their footers). */
async function copiesOf(nodes: readonly ClusterNodeProcess[], bucket: string, key: string): Promise<{ node: string; path: string }[]> {
  const found: { node: string; path: string }[] = [];
  for (const n of nodes) {
    const dir = join(n.dataDir, 'buckets', 'objects', bucket);
    if (!existsSync(dir)) continue;
    for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
      if (!e.isFile()) continue;
      const path = join(e.parentPath, e.name);
      if ((await readFooter(path))?.key === key) found.push({ node: n.name, path });
    }
  }
  return found;
}

/** How many object files of `bucket` a node holds on its disk. */
function filesOn(node: ClusterNodeProcess, bucket: string): number {
  const dir = join(node.dataDir, 'buckets', 'objects', bucket);
  return existsSync(dir) ? readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length : 0;
}

async function bytesOf(client: S3Client, bucket: string, key: string, range?: string): Promise<Buffer> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(range ? { Range: range } : {}) }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

test('S3 in a cluster: one catalog on every node, objects read through any node, two copies of each, deletes everywhere; the writer killed, nothing is lost; back, two copies again', async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t, 'rec-clusters3-');
  const cluster = await startNatsCluster({ dir: join(dir, 'nats') });
  t.teardown(() => cluster.stop());
  const env = {
    RECORDER_S3: '127.0.0.1:0',
    RECORDER_S3_ACCESS_KEY: S3_KEY,
    RECORDER_S3_SECRET_KEY: S3_SECRET,
    // A scrub every 2 s: a copy whose bytes rot is seen and mended within the test.
    RECORDER_S3_SCRUB_MS: '2000',
  };
  const nodes = await spawnClusterNodes(t, dir, cluster.urls, ['a', 'b', 'c'], env);
  const [a, b, c] = nodes as [ClusterNodeProcess, ClusterNodeProcess, ClusterNodeProcess];
  const s3 = await Promise.all(nodes.map((n) => n.proc.s3));
  const [sa, sb, sc] = s3.map((url) => s3Client(t, url)) as [S3Client, S3Client, S3Client];

  await waitFor(
    'the pool accepted (the cluster config is up)',
    async () => (await send('PUT', `${a.http}/api/pools/dup`, { capacityBytes: null, overwrite: 'capacity', copies: 2 })).status === 200,
    60_000,
    500,
  );
  await waitFor(
    'every node knows the pool',
    async () => {
      const all = await Promise.all(nodes.map(async (n) => JSON.stringify((await send('GET', `${n.http}/api/pools`)).body)));
      return all.every((p) => p.includes('"dup"'));
    },
    30_000,
    250,
  );
  await waitFor(
    'the bucket made through a',
    async () => {
      await sa.send(new CreateBucketCommand({ Bucket: 'evidence', CreateBucketConfiguration: { LocationConstraint: 'dup' as never } }));
      return true;
    },
    30_000,
    500,
  );

  // Peers read each other's files with the cluster token, which each node binds with its
  // copies stream (a new stream's leader election can take seconds): the cluster is ready
  // once an object written through each node reads through the others.
  for (const [i, writer] of [sa, sb, sc].entries()) await writer.send(new PutObjectCommand({ Bucket: 'evidence', Key: `ready/${i}`, Body: `ready ${i}` }));
  await waitFor(
    'every node reads what the others wrote',
    async () => {
      for (const reader of [sa, sb, sc])
        for (let i = 0; i < 3; i++) if ((await bytesOf(reader, 'evidence', `ready/${i}`)).toString() !== `ready ${i}`) return false;
      return true;
    },
    60_000,
    500,
  );
  for (let i = 0; i < 3; i++) await sa.send(new DeleteObjectCommand({ Bucket: 'evidence', Key: `ready/${i}` }));
  const sum = (counts: number[]): number => counts.reduce((a, b) => a + b, 0);
  await untilFiles(nodes, 'evidence', 'the ready objects\u2019 files gone', (counts) => sum(counts) === 0);

  // Objects through a and b, of sizes from empty to 3 MiB.
  const objects = new Map<string, Buffer>();
  for (const [i, size] of [0, 1, 4096, 300_000, 3 * 1024 * 1024].entries()) objects.set(`a/${i}.bin`, randomBytes(size));
  for (const [i, size] of [10, 70_000].entries()) objects.set(`b/${i}.bin`, randomBytes(size));
  for (const [key, body] of objects) await (key.startsWith('a/') ? sa : sb).send(new PutObjectCommand({ Bucket: 'evidence', Key: key, Body: body }));

  // Read through c at once after the answers: listing and every byte.
  const listed = await sc.send(new ListObjectsV2Command({ Bucket: 'evidence' }));
  t.deepEqual((listed.Contents ?? []).map((o) => o.Key).sort(), [...objects.keys()].sort());
  for (const [key, body] of objects) t.is(sha(await bytesOf(sc, 'evidence', key)), sha(body), key);
  const big = objects.get('a/4.bin')!;
  t.deepEqual(await bytesOf(sc, 'evidence', 'a/4.bin', 'bytes=1000000-1000099'), big.subarray(1_000_000, 1_000_100));

  // Two copies of each as soon as each PUT was answered (the empty one has a file too).
  t.is(sum(nodes.map((n) => filesOn(n, 'evidence'))), 2 * objects.size, 'copies made before the answers');
  for (const n of nodes) t.true(filesOn(n, 'evidence') <= objects.size);

  // A delete through b: gone through every node, its two files too.
  await sb.send(new DeleteObjectCommand({ Bucket: 'evidence', Key: 'b/0.bin' }));
  objects.delete('b/0.bin');
  t.is(await s3Code(t, sa.send(new GetObjectCommand({ Bucket: 'evidence', Key: 'b/0.bin' }))), 'NoSuchKey');
  t.is(await s3Code(t, sc.send(new GetObjectCommand({ Bucket: 'evidence', Key: 'b/0.bin' }))), 'NoSuchKey');
  await untilFiles(nodes, 'evidence', 'the deleted object\u2019s files gone', (counts) => sum(counts) === 2 * objects.size);

  // One bucket name made through two nodes at once: one of them made it.
  const race = await Promise.allSettled([sa, sb].map((cl) => cl.send(new CreateBucketCommand({ Bucket: 'race' }))));
  t.is(race.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(race.map((r) => (r.status === 'rejected' ? (r.reason as Error).name : 'ok'))));

  // Versions through one node, listed through another.
  await sb.send(new PutBucketVersioningCommand({ Bucket: 'evidence', VersioningConfiguration: { Status: 'Enabled' } }));
  await sc.send(new PutObjectCommand({ Bucket: 'evidence', Key: 'v.txt', Body: 'one' }));
  await sa.send(new PutObjectCommand({ Bucket: 'evidence', Key: 'v.txt', Body: 'two' }));
  const versions = await sb.send(new ListObjectVersionsCommand({ Bucket: 'evidence', Prefix: 'v.txt' }));
  t.is(versions.Versions?.length, 2);
  t.is((await bytesOf(sb, 'evidence', 'v.txt')).toString(), 'two');
  objects.set('v.txt', Buffer.from('two'));

  // A multipart upload created through a, its parts sent through b and c, listed through
  // b, completed through c: the parts are passed to a, which holds the upload.
  const created = await sa.send(new CreateMultipartUploadCommand({ Bucket: 'evidence', Key: 'mp.bin' }));
  const partOne = randomBytes(5 * 1024 * 1024);
  const partTwo = randomBytes(123_456);
  const etagOne = (await sb.send(new UploadPartCommand({ Bucket: 'evidence', Key: 'mp.bin', UploadId: created.UploadId!, PartNumber: 1, Body: partOne })))
    .ETag!;
  const etagTwo = (await sc.send(new UploadPartCommand({ Bucket: 'evidence', Key: 'mp.bin', UploadId: created.UploadId!, PartNumber: 2, Body: partTwo })))
    .ETag!;
  const parts = await sb.send(new ListPartsCommand({ Bucket: 'evidence', Key: 'mp.bin', UploadId: created.UploadId! }));
  t.deepEqual(
    (parts.Parts ?? []).map((p) => [p.PartNumber, p.Size]),
    [
      [1, partOne.length],
      [2, partTwo.length],
    ],
  );
  await sc.send(
    new CompleteMultipartUploadCommand({
      Bucket: 'evidence',
      Key: 'mp.bin',
      UploadId: created.UploadId!,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: etagOne },
          { PartNumber: 2, ETag: etagTwo },
        ],
      },
    }),
  );
  const whole = Buffer.concat([partOne, partTwo]);
  t.is(sha(await bytesOf(sb, 'evidence', 'mp.bin')), sha(whole));
  objects.set('mp.bin', whole);

  // A copy rots on one holder (a plain object and the multipart one): that node's scrub
  // finds no local copy matching the ETag and makes it again from another node's.
  for (const key of ['a/3.bin', 'mp.bin']) {
    const [held] = await copiesOf(nodes, 'evidence', key);
    t.truthy(held, `a copy of ${key} on disk`);
    const fh = await open(held!.path, 'r+');
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, 1000);
    byte[0] = byte[0]! ^ 0xff;
    await fh.write(byte, 0, 1, 1000);
    await fh.close();
    const body = objects.get(key)!;
    await waitFor(
      `the rotten copy of ${key} on ${held!.node} mended`,
      async () => sha((await readFile(held!.path)).subarray(0, body.length)) === sha(body),
      60_000,
      250,
    );
  }

  // A user's key issued through b signs requests to c (a user sees their pools' buckets
  // only); revoked through a, c refuses it.
  // The first user makes the API ask for credentials: an admin first, then calls as it.
  t.is((await send('PUT', `${a.http}/api/users/admin`, { role: 'admin', password: 'admin-password' })).status, 200);
  const asAdmin = async <T>(method: string, url: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const res = await fetch(url, {
      method,
      headers: {
        Authorization: `Basic ${Buffer.from('admin:admin-password').toString('base64')}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json()) as T };
  };
  t.is((await asAdmin('PUT', `${a.http}/api/users/alice`, { role: 'operator', pools: ['dup'], password: 'alice-password' })).status, 200);
  const issued = await waitFor(
    'a key issued through b (once b has the users)',
    async () => {
      const res = await asAdmin<{ accessKeyId: string; secretAccessKey: string }>('POST', `${b.http}/api/users/alice/s3-keys`);
      return res.status === 201 ? res.body : null;
    },
    30_000,
    250,
  );
  const alice = s3Client(t, s3[2]!, { accessKeyId: issued.accessKeyId, secretAccessKey: issued.secretAccessKey });
  t.deepEqual(
    ((await alice.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name),
    ['evidence'],
  );
  t.is((await bytesOf(alice, 'evidence', 'v.txt')).toString(), 'two');
  t.is((await asAdmin('DELETE', `${a.http}/api/users/alice/s3-keys/${issued.accessKeyId}`)).status, 200);
  t.is(await s3Code(t, alice.send(new ListBucketsCommand({}))), 'InvalidAccessKeyId');

  // The node that wrote most of them is killed: every object still reads through b and c.
  const files = objects.size + 1; // the noncurrent version of v.txt has its file too
  await untilFiles(nodes, 'evidence', 'two copies of everything before the kill', (counts) => sum(counts) === 2 * files);
  a.proc.child.kill('SIGKILL');
  await a.proc.exited;
  for (const [key, body] of objects) {
    t.is(sha(await bytesOf(sc, 'evidence', key)), sha(body), `${key} through c`);
    t.is(sha(await bytesOf(sb, 'evidence', key)), sha(body), `${key} through b`);
  }
  // Once a is judged dead, what it held is copied again: every file on both b and c.
  await untilFiles([b, c], 'evidence', 'the lost copies re-made on the survivors', (counts) => counts.every((n) => n === files), 90_000);

  // While a is away, objects are put through b, and a's disk is given b's file of those a
  // will hold, as if a had written them and died before applying their changes: the files
  // are not in a's catalog when it starts. Back, a keeps them (its start-up sweep waits
  // until it has applied the object log): the very files, dated 2001, not pulled again.
  const planted: string[] = [];
  for (let i = 0; planted.length < 2; i++) {
    if (i === 20) t.fail('a is a holder of none of 20 objects');
    const key = `while-away/${i}.bin`;
    const body = randomBytes(1000 + i);
    await sb.send(new PutObjectCommand({ Bucket: 'evidence', Key: key, Body: body }));
    objects.set(key, body);
    const [src] = await copiesOf([b], 'evidence', key);
    const fileId = basename(src!.path);
    if (!copyHolders(objectCopyKey('evidence', fileId), b.id, [a.id, b.id, c.id], 2).includes(a.id)) continue;
    const dest = join(a.dataDir, 'buckets', 'objects', 'evidence', basename(dirname(src!.path)), fileId);
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(src!.path, dest);
    await utimes(dest, new Date('2001-01-01'), new Date('2001-01-01'));
    planted.push(dest);
  }
  const allFiles = objects.size + 1;

  // a comes back with its files: once membership holds still, each object is on exactly
  // two nodes again (the copies made while it was away, or its own, trimmed), and every
  // object still reads through a.
  const back = spawnRecorder(t, {
    ...env,
    RECORDER_DATA_DIR: a.dataDir,
    RECORDER_HTTP: '127.0.0.1:0',
    RECORDER_NATS_URL: cluster.urls,
    RECORDER_SYNC_SECONDS: '0',
  });
  const sa2 = s3Client(t, await back.s3);
  await untilFiles(nodes, 'evidence', 'exactly two copies of everything after a came back', (counts) => sum(counts) === 2 * allFiles, 90_000);
  for (const [key, body] of objects) t.is(sha(await bytesOf(sa2, 'evidence', key)), sha(body), `${key} through a, back`);
  for (const path of planted) t.is((await stat(path)).mtime.getUTCFullYear(), 2001, `${path}: kept by a's start-up sweep`);
});
