/**
 * S3 multipart uploads, DeleteObjects and CopyObject (issue 17 slice 2) against real
 * clients: the AWS SDK (the multipart calls one by one, with the refusals S3 makes),
 * the `aws` CLI (a 200 MB upload it sends in parts, downloaded again in two ranged
 * requests resumed at a random offset), rclone (copy, sync, check) and s3cmd; and a
 * recorder killed with SIGKILL during a single PUT, an overwrite and a multipart upload:
 * no torn object, the old version intact, no tmp or part file leaked, the committed
 * parts still there to resume, then gone when the upload expires.
 */
import test from 'ava';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';
import { S3_KEY as KEY, S3_SECRET as SECRET, s3Client, s3Code as code, s3Node } from './helpers/s3.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

async function bytes(c: S3Client, Bucket: string, Key: string, Range?: string): Promise<Buffer> {
  const got = await c.send(new GetObjectCommand({ Bucket, Key, ...(Range ? { Range } : {}) }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

test('SDK multipart: parts, listings, Complete refusals (order, unknown part, too small), ETag, part copy, abort', async (t) => {
  const { client: c, dataDir } = await s3Node(t);
  await c.send(new CreateBucketCommand({ Bucket: 'mpart' }));
  const p1 = randomBytes(5 * MiB);
  const p2 = randomBytes(5 * MiB);
  const p3 = randomBytes(1000);
  const { UploadId } = await c.send(
    new CreateMultipartUploadCommand({ Bucket: 'mpart', Key: 'big.bin', ContentType: 'application/x-test', Metadata: { origin: 'sdk' } }),
  );
  t.truthy(UploadId);
  const up = { Bucket: 'mpart', Key: 'big.bin', UploadId };
  // Part 2 first, then part 1 twice (the second replaces the first), then part 3.
  const e2 = (await c.send(new UploadPartCommand({ ...up, PartNumber: 2, Body: p2 }))).ETag!;
  await c.send(new UploadPartCommand({ ...up, PartNumber: 1, Body: randomBytes(6 * MiB) }));
  const e1 = (await c.send(new UploadPartCommand({ ...up, PartNumber: 1, Body: p1 }))).ETag!;
  const e3 = (await c.send(new UploadPartCommand({ ...up, PartNumber: 3, Body: p3 }))).ETag!;
  t.is(e1, `"${md5(p1)}"`);
  const parts = await c.send(new ListPartsCommand(up));
  t.deepEqual(
    parts.Parts?.map((p) => [p.PartNumber, p.Size, p.ETag]),
    [
      [1, p1.length, e1],
      [2, p2.length, e2],
      [3, p3.length, e3],
    ],
  );
  t.is((await readdir(join(dataDir, 'buckets', 'parts', UploadId!))).length, 3, 'the replaced part 1 file is gone');
  const uploads = await c.send(new ListMultipartUploadsCommand({ Bucket: 'mpart' }));
  t.deepEqual(
    uploads.Uploads?.map((u) => [u.Key, u.UploadId]),
    [['big.bin', UploadId]],
  );

  t.is(
    await code(
      t,
      c.send(
        new CompleteMultipartUploadCommand({
          ...up,
          MultipartUpload: {
            Parts: [
              { PartNumber: 2, ETag: e2 },
              { PartNumber: 1, ETag: e1 },
            ],
          },
        }),
      ),
    ),
    'InvalidPartOrder',
  );
  t.is(
    await code(
      t,
      c.send(
        new CompleteMultipartUploadCommand({
          ...up,
          MultipartUpload: {
            Parts: [
              { PartNumber: 1, ETag: e1 },
              { PartNumber: 4, ETag: e3 },
            ],
          },
        }),
      ),
    ),
    'InvalidPart',
  );
  t.is(await code(t, c.send(new CompleteMultipartUploadCommand({ ...up, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e2 }] } }))), 'InvalidPart');
  // A part below 5 MiB that is not the last.
  t.is(
    await code(
      t,
      c.send(
        new CompleteMultipartUploadCommand({
          ...up,
          MultipartUpload: {
            Parts: [
              { PartNumber: 3, ETag: e3 },
              { PartNumber: 4, ETag: e3 },
            ],
          },
        }),
      ),
    ),
    'InvalidPart',
  );
  const small = await c.send(new CreateMultipartUploadCommand({ Bucket: 'mpart', Key: 'small.bin' }));
  const s1 = (await c.send(new UploadPartCommand({ Bucket: 'mpart', Key: 'small.bin', UploadId: small.UploadId, PartNumber: 1, Body: randomBytes(MiB) })))
    .ETag!;
  const s2 = (await c.send(new UploadPartCommand({ Bucket: 'mpart', Key: 'small.bin', UploadId: small.UploadId, PartNumber: 2, Body: randomBytes(MiB) })))
    .ETag!;
  t.is(
    await code(
      t,
      c.send(
        new CompleteMultipartUploadCommand({
          Bucket: 'mpart',
          Key: 'small.bin',
          UploadId: small.UploadId,
          MultipartUpload: {
            Parts: [
              { PartNumber: 1, ETag: s1 },
              { PartNumber: 2, ETag: s2 },
            ],
          },
        }),
      ),
    ),
    'EntityTooSmall',
  );
  t.is(await code(t, c.send(new HeadObjectCommand({ Bucket: 'mpart', Key: 'big.bin' }))), 'NotFound', 'nothing visible before Complete');

  const done = await c.send(
    new CompleteMultipartUploadCommand({
      ...up,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: e1 },
          { PartNumber: 2, ETag: e2 },
          { PartNumber: 3, ETag: e3 },
        ],
      },
    }),
  );
  const expectEtag = `"${createHash('md5')
    .update(Buffer.concat([p1, p2, p3].map((p) => createHash('md5').update(p).digest())))
    .digest('hex')}-3"`;
  t.is(done.ETag, expectEtag);
  const whole = await c.send(new GetObjectCommand({ Bucket: 'mpart', Key: 'big.bin' }));
  t.is(whole.ETag, expectEtag);
  t.is(whole.ContentType, 'application/x-test');
  t.deepEqual(whole.Metadata, { origin: 'sdk' });
  t.is(md5(Buffer.from(await whole.Body!.transformToByteArray())), md5(Buffer.concat([p1, p2, p3])));
  t.false((await readdir(join(dataDir, 'buckets', 'parts'))).includes(UploadId!), 'the parts are gone after Complete');
  t.is(await code(t, c.send(new ListPartsCommand(up))), 'NoSuchUpload');

  // UploadPartCopy: a part made of a range of the object just assembled.
  const cp = await c.send(new CreateMultipartUploadCommand({ Bucket: 'mpart', Key: 'copied.bin' }));
  const pc = await c.send(
    new UploadPartCopyCommand({
      Bucket: 'mpart',
      Key: 'copied.bin',
      UploadId: cp.UploadId,
      PartNumber: 1,
      CopySource: 'mpart/big.bin',
      CopySourceRange: 'bytes=100-5242979',
    }),
  );
  const tailPart = (await c.send(new UploadPartCommand({ Bucket: 'mpart', Key: 'copied.bin', UploadId: cp.UploadId, PartNumber: 2, Body: 'end' }))).ETag!;
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: 'mpart',
      Key: 'copied.bin',
      UploadId: cp.UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: pc.CopyPartResult!.ETag },
          { PartNumber: 2, ETag: tailPart },
        ],
      },
    }),
  );
  t.is(md5(await bytes(c, 'mpart', 'copied.bin')), md5(Buffer.concat([Buffer.concat([p1, p2]).subarray(100, 5242980), Buffer.from('end')])));

  // Abort: the upload and its part files go.
  await c.send(new AbortMultipartUploadCommand({ Bucket: 'mpart', Key: 'small.bin', UploadId: small.UploadId }));
  t.is(await code(t, c.send(new ListPartsCommand({ Bucket: 'mpart', Key: 'small.bin', UploadId: small.UploadId }))), 'NoSuchUpload');
  t.deepEqual(await readdir(join(dataDir, 'buckets', 'parts')), []);
  t.deepEqual(await readdir(join(dataDir, 'buckets', 'tmp')), []);
});

test('DeleteObjects and CopyObject: metadata copied or replaced, a new ACL opens an object to anonymous reads', async (t) => {
  const { s3, client: c } = await s3Node(t);
  await c.send(new CreateBucketCommand({ Bucket: 'src' }));
  await c.send(new CreateBucketCommand({ Bucket: 'dst' }));
  await c.send(new PutObjectCommand({ Bucket: 'src', Key: 'a.txt', Body: 'alpha', ContentType: 'text/plain', Metadata: { who: 'gate' } }));
  const kept = await c.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'a-copy.txt', CopySource: 'src/a.txt' }));
  t.is(kept.CopyObjectResult?.ETag, `"${md5(Buffer.from('alpha'))}"`);
  const h1 = await c.send(new HeadObjectCommand({ Bucket: 'dst', Key: 'a-copy.txt' }));
  t.deepEqual(h1.Metadata, { who: 'gate' });
  t.is(h1.ContentType, 'text/plain');
  // REPLACE with public-read: new metadata, and anyone may read it by URL.
  await c.send(
    new CopyObjectCommand({
      Bucket: 'dst',
      Key: 'public.txt',
      CopySource: 'src/a.txt',
      MetadataDirective: 'REPLACE',
      Metadata: { who: 'door' },
      ContentType: 'text/x-new',
      ACL: 'public-read',
    }),
  );
  const h2 = await c.send(new HeadObjectCommand({ Bucket: 'dst', Key: 'public.txt' }));
  t.deepEqual(h2.Metadata, { who: 'door' });
  t.is(h2.ContentType, 'text/x-new');
  const anon = await fetch(`${s3}/dst/public.txt`);
  t.is(anon.status, 200);
  t.is(await anon.text(), 'alpha');
  t.is((await fetch(`${s3}/dst/a-copy.txt`)).status, 403, 'a private object stays closed');
  // Onto itself without a change: S3's InvalidRequest; with REPLACE: new metadata.
  t.is(await code(t, c.send(new CopyObjectCommand({ Bucket: 'src', Key: 'a.txt', CopySource: 'src/a.txt' }))), 'InvalidRequest');
  await c.send(new CopyObjectCommand({ Bucket: 'src', Key: 'a.txt', CopySource: 'src/a.txt', MetadataDirective: 'REPLACE', Metadata: { who: 'self' } }));
  t.deepEqual((await c.send(new HeadObjectCommand({ Bucket: 'src', Key: 'a.txt' }))).Metadata, { who: 'self' });
  t.is(await code(t, c.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'x', CopySource: 'src/none' }))), 'NoSuchKey');
  t.is(await code(t, c.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'x', CopySource: 'src/a.txt', CopySourceIfMatch: '"nope"' }))), 'PreconditionFailed');

  for (let i = 0; i < 5; i++) await c.send(new PutObjectCommand({ Bucket: 'dst', Key: `d${i}`, Body: String(i) }));
  const del = await c.send(
    new DeleteObjectsCommand({ Bucket: 'dst', Delete: { Objects: [{ Key: 'd0' }, { Key: 'd1' }, { Key: 'absent' }, { Key: 'bad/../key' }] } }),
  );
  t.deepEqual(del.Deleted?.map((d) => d.Key).sort(), ['absent', 'd0', 'd1']);
  t.deepEqual(
    del.Errors?.map((e) => [e.Key, e.Code]),
    [['bad/../key', 'InvalidArgument']],
  );
  const left = await c.send(new ListObjectsV2Command({ Bucket: 'dst' }));
  t.deepEqual(
    left.Contents?.map((o) => o.Key),
    ['a-copy.txt', 'd2', 'd3', 'd4', 'public.txt'],
  );
});

test('aws CLI: a 200 MB upload in parts, downloaded again resumed at a random offset, equals the source', async (t) => {
  const { s3, client: c } = await s3Node(t);
  const dir = await tempDir(t, 's3-big-');
  await writeFile(join(dir, 'config'), '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n    multipart_chunksize = 16MB\n');
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_CONFIG_FILE: join(dir, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
  };
  const src = join(dir, 'big.bin');
  const sha = createHash('sha256');
  const out = createWriteStream(src);
  for (let i = 0; i < 200; i++) {
    const chunk = randomBytes(MiB);
    sha.update(chunk);
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r) => out.end(() => r()));
  const want = sha.digest('hex');
  await run('aws', ['--endpoint-url', s3, 's3', 'mb', 's3://big'], { env });
  await run('aws', ['--endpoint-url', s3, 's3', 'cp', src, 's3://big/big.bin'], { env, timeout: 170_000 });
  const head = await c.send(new HeadObjectCommand({ Bucket: 'big', Key: 'big.bin' }));
  t.is(head.ContentLength, 200 * MiB);
  t.regex(head.ETag ?? '', /-13"$/, 'assembled from 13 parts of 16 MiB');
  // A download cut at a random offset, resumed with a Range from there.
  const cut = randomInt(1, 200 * MiB - 1);
  const got = createHash('sha256');
  const first = await c.send(new GetObjectCommand({ Bucket: 'big', Key: 'big.bin' }));
  let have = 0;
  for await (const chunk of first.Body as AsyncIterable<Uint8Array>) {
    const take = Math.min(chunk.length, cut - have);
    got.update(chunk.subarray(0, take));
    have += take;
    if (have >= cut) break;
  }
  const rest = await c.send(new GetObjectCommand({ Bucket: 'big', Key: 'big.bin', Range: `bytes=${cut}-` }));
  t.is(rest.ContentRange, `bytes ${cut}-${200 * MiB - 1}/${200 * MiB}`);
  for await (const chunk of rest.Body as AsyncIterable<Uint8Array>) got.update(chunk);
  t.is(got.digest('hex'), want);
});

test('rclone copy, sync and check; s3cmd mb, put (in parts), ls, get, del', async (t) => {
  const { s3, client: c } = await s3Node(t);
  const dir = await tempDir(t, 's3-tools-');
  const tree = join(dir, 'tree');
  await mkdir(join(tree, 'sub', 'deeper'), { recursive: true });
  const files: Record<string, Buffer> = {
    'a.txt': Buffer.from('a'),
    'sub/b.bin': randomBytes(100_000),
    'sub/deeper/c.bin': randomBytes(7 * MiB),
    'sub/deeper/e.txt': Buffer.alloc(0),
  };
  for (const [f, b] of Object.entries(files)) await writeFile(join(tree, f), b);
  const { port } = new URL(s3);
  // An AWS_CA_BUNDLE in the environment (for HTTPS to AWS) makes rclone refuse a plain-HTTP endpoint.
  const { AWS_CA_BUNDLE: _bundle, ...inherited } = process.env;
  const renv = {
    ...inherited,
    RCLONE_CONFIG: join(dir, 'rclone.conf'),
    RCLONE_CONFIG_REC_TYPE: 's3',
    RCLONE_CONFIG_REC_PROVIDER: 'Other',
    RCLONE_CONFIG_REC_ACCESS_KEY_ID: KEY,
    RCLONE_CONFIG_REC_SECRET_ACCESS_KEY: SECRET,
    RCLONE_CONFIG_REC_ENDPOINT: s3,
    RCLONE_CONFIG_REC_FORCE_PATH_STYLE: 'true',
  };
  const rclone = async (...args: string[]): Promise<string> => (await run('rclone', [...args], { env: renv, timeout: 120_000 })).stdout;
  await rclone('mkdir', 'rec:tools');
  await rclone('copy', tree, 'rec:tools/tree');
  await rclone('check', tree, 'rec:tools/tree');
  for (const [f, b] of Object.entries(files)) t.is(md5(await bytes(c, 'tools', `tree/${f}`)), md5(b), f);
  // sync: a new file goes up, a removed one goes away, a changed one is replaced.
  await writeFile(join(tree, 'new.txt'), 'new');
  await writeFile(join(tree, 'a.txt'), 'changed');
  await rm(join(tree, 'sub', 'b.bin'));
  await rclone('sync', tree, 'rec:tools/tree');
  await rclone('check', tree, 'rec:tools/tree');
  const listed = await c.send(new ListObjectsV2Command({ Bucket: 'tools', Prefix: 'tree/' }));
  t.deepEqual(listed.Contents?.map((o) => o.Key).sort(), ['tree/a.txt', 'tree/new.txt', 'tree/sub/deeper/c.bin', 'tree/sub/deeper/e.txt']);
  // check notices a difference.
  await writeFile(join(tree, 'new.txt'), 'different');
  await t.throwsAsync(rclone('check', tree, 'rec:tools/tree'));

  const cfg = join(dir, 's3cfg');
  await writeFile(
    cfg,
    `[default]\naccess_key = ${KEY}\nsecret_key = ${SECRET}\nhost_base = 127.0.0.1:${port}\nhost_bucket = 127.0.0.1:${port}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\nmultipart_chunk_size_mb = 5\n`,
  );
  const s3cmd = async (...args: string[]): Promise<string> => (await run('s3cmd', ['-c', cfg, ...args], { timeout: 120_000 })).stdout;
  await s3cmd('mb', 's3://via-s3cmd');
  const big = randomBytes(12 * MiB);
  await writeFile(join(dir, 'big.bin'), big);
  await s3cmd('put', join(dir, 'big.bin'), 's3://via-s3cmd/big.bin');
  await s3cmd('put', join(tree, 'a.txt'), 's3://via-s3cmd/dir/a.txt');
  const ls = await s3cmd('ls', 's3://via-s3cmd/');
  t.regex(ls, /DIR\s+s3:\/\/via-s3cmd\/dir\//);
  t.regex(ls, new RegExp(`${big.length}\\s+s3://via-s3cmd/big\\.bin`));
  t.regex((await c.send(new HeadObjectCommand({ Bucket: 'via-s3cmd', Key: 'big.bin' }))).ETag ?? '', /-3"$/, 's3cmd sent it in 3 parts');
  await s3cmd('get', 's3://via-s3cmd/big.bin', join(dir, 'back.bin'));
  t.is(md5(await readFile(join(dir, 'back.bin'))), md5(big));
  await s3cmd('del', 's3://via-s3cmd/big.bin');
  t.deepEqual(
    (await c.send(new ListObjectsV2Command({ Bucket: 'via-s3cmd' }))).Contents?.map((o) => o.Key),
    ['dir/a.txt'],
  );
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Sends headers and `sent` bytes of a body of `length`, then keeps the socket open (until the process dies). */
function partialPut(url: URL, length: number, sent: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect(Number(url.port), url.hostname, () => {
      sock.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: ${length}\r\n\r\n`);
      sock.write(sent, () => resolve());
    });
    sock.on('error', () => undefined);
    sock.once('error', reject);
  });
}

test('kill -9 during uploads: no torn object, the old version intact, no leaked files; parts kept to resume, then expired', async (t) => {
  const dir = await tempDir(t);
  const port = await freePort();
  const s3 = `http://127.0.0.1:${port}`;
  const env = {
    RECORDER_DATA_DIR: dir,
    RECORDER_HTTP: '127.0.0.1:0',
    RECORDER_S3: `127.0.0.1:${port}`,
    RECORDER_S3_ACCESS_KEY: KEY,
    RECORDER_S3_SECRET_KEY: SECRET,
  };
  const first = spawnRecorder(t, env);
  await first.http;
  const c = s3Client(t, s3);
  await waitFor('the S3 listener', () => c.send(new CreateBucketCommand({ Bucket: 'crash' })).then(() => true));
  const old = randomBytes(300_000);
  await c.send(new PutObjectCommand({ Bucket: 'crash', Key: 'over', Body: old }));
  // A multipart upload with one part committed, a second part half sent.
  const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: 'crash', Key: 'mp' }));
  const part1 = randomBytes(5 * MiB);
  const e1 = (await c.send(new UploadPartCommand({ Bucket: 'crash', Key: 'mp', UploadId, PartNumber: 1, Body: part1 }))).ETag!;
  const partUrl = new URL(await getSignedUrl(c, new UploadPartCommand({ Bucket: 'crash', Key: 'mp', UploadId, PartNumber: 2 }), { expiresIn: 300 }));
  const newUrl = new URL(await getSignedUrl(c, new PutObjectCommand({ Bucket: 'crash', Key: 'fresh' }), { expiresIn: 300 }));
  const overUrl = new URL(await getSignedUrl(c, new PutObjectCommand({ Bucket: 'crash', Key: 'over' }), { expiresIn: 300 }));
  await partialPut(partUrl, 8 * MiB, randomBytes(3 * MiB));
  await partialPut(newUrl, 4 * MiB, randomBytes(2 * MiB));
  await partialPut(overUrl, 4 * MiB, randomBytes(2 * MiB));
  // All three are writing into tmp/ when the process dies.
  await waitFor('three uploads in tmp/', async () => (await readdir(join(dir, 'buckets', 'tmp'))).length === 3, 20_000, 50);
  first.child.kill('SIGKILL');
  await first.exited;

  const second = spawnRecorder(t, env);
  await second.http;
  await waitFor('the S3 listener again', () => c.send(new ListObjectsV2Command({ Bucket: 'crash' })).then(() => true));
  t.deepEqual(await readdir(join(dir, 'buckets', 'tmp')), [], 'no upload left in tmp/');
  const listed = await c.send(new ListObjectsV2Command({ Bucket: 'crash' }));
  t.deepEqual(
    listed.Contents?.map((o) => o.Key),
    ['over'],
    'the cut PUT of a new key left nothing',
  );
  t.is(md5(await bytes(c, 'crash', 'over')), md5(old), 'the cut overwrite left the old version whole');
  const parts = await c.send(new ListPartsCommand({ Bucket: 'crash', Key: 'mp', UploadId }));
  t.deepEqual(
    parts.Parts?.map((p) => [p.PartNumber, p.ETag]),
    [[1, e1]],
    'the committed part is there to resume',
  );
  t.is((await readdir(join(dir, 'buckets', 'parts', UploadId!))).length, 1, 'only the committed part file');
  // Resume: the second part again, then Complete.
  const part2 = randomBytes(1000);
  const e2 = (await c.send(new UploadPartCommand({ Bucket: 'crash', Key: 'mp', UploadId, PartNumber: 2, Body: part2 }))).ETag!;
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: 'crash',
      Key: 'mp',
      UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: e1 },
          { PartNumber: 2, ETag: e2 },
        ],
      },
    }),
  );
  t.is(md5(await bytes(c, 'crash', 'mp')), md5(Buffer.concat([part1, part2])));
  // An abandoned upload: gone at the next start once older than the expiry.
  const abandoned = await c.send(new CreateMultipartUploadCommand({ Bucket: 'crash', Key: 'left' }));
  await c.send(new UploadPartCommand({ Bucket: 'crash', Key: 'left', UploadId: abandoned.UploadId, PartNumber: 1, Body: 'x' }));
  second.child.kill('SIGKILL');
  await second.exited;
  const third = spawnRecorder(t, { ...env, RECORDER_S3_UPLOAD_EXPIRY_MS: '1000' });
  await third.http;
  await waitFor('the abandoned upload expired', async () => (await c.send(new ListMultipartUploadsCommand({ Bucket: 'crash' }))).Uploads === undefined);
  t.deepEqual(await readdir(join(dir, 'buckets', 'parts')), []);
  t.is(md5(await bytes(c, 'crash', 'mp')), md5(Buffer.concat([part1, part2])));
});
