/**
 * The S3 listener (issue 17, buckets/) against real clients: @aws-sdk/client-s3 and the
 * `aws` CLI, on a real node (startNode) with its first access key from the settings.
 * What it tries: buckets (create, head, list, delete, not empty), objects (put with
 * metadata, get whole and by range, the conditional headers, head, delete), listings
 * (prefix, delimiter, continuation pages), the streaming and unsigned payload forms the
 * clients send, and bad input (a wrong signature, keys with `..`, NUL or 2 kB, a body
 * shorter than its Content-Length, a 5 GiB PUT) answered with S3's error and nothing
 * stored; the start-up sweep of unfinished uploads.
 */
import test from 'ava';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { execFile } from 'node:child_process';
import { Agent } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { tempDir, waitFor } from './helpers/recorder.ts';
import { S3_KEY as KEY, S3_SECRET as SECRET, s3Error, s3Node } from './helpers/s3.ts';

const run = promisify(execFile);
/** A raw HTTP exchange on one socket: what the server answers, until it closes or `until` matches. */
function rawExchange(url: string, head: string, body: Buffer, opts: { end?: boolean } = {}): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => {
      sock.write(head);
      if (body.length) sock.write(body);
      if (opts.end) sock.end();
    });
    let got = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      got += d;
      if (/\r\n\r\n[\s\S]*<\/Error>/.test(got)) sock.destroy();
    });
    sock.on('close', () => resolve(got));
    sock.on('error', (err) => (got ? resolve(got) : reject(err)));
    sock.setTimeout(20_000, () => sock.destroy());
  });
}

test('SDK: buckets, objects with metadata, ranges, conditional GETs, listings by pages', async (t) => {
  const { client, dataDir, s3 } = await s3Node(t);
  await client.send(new CreateBucketCommand({ Bucket: 'clips' }));
  t.is((await s3Error(t, client.send(new CreateBucketCommand({ Bucket: 'clips' })))).name, 'BucketAlreadyOwnedByYou');
  t.is((await s3Error(t, client.send(new CreateBucketCommand({ Bucket: 'Bad_Name' })))).name, 'InvalidBucketName');
  await client.send(new HeadBucketCommand({ Bucket: 'clips' }));
  t.is((await s3Error(t, client.send(new HeadBucketCommand({ Bucket: 'nope' })))).status, 404);
  const buckets = await client.send(new ListBucketsCommand({}));
  t.deepEqual(
    buckets.Buckets?.map((b) => b.Name),
    ['clips'],
  );

  // A body of 300 kB: the SDK sends it aws-chunked with a CRC-32 trailer.
  const data = randomBytes(300_000);
  const put = await client.send(
    new PutObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Body: data, ContentType: 'video/mp4', Metadata: { camera: 'gate', note: 'x y' } }),
  );
  const md5 = createHash('md5').update(data).digest('hex');
  t.is(put.ETag, `"${md5}"`);
  const got = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin' }));
  t.true(Buffer.from(await got.Body!.transformToByteArray()).equals(data));
  t.is(got.ContentType, 'video/mp4');
  t.deepEqual(got.Metadata, { camera: 'gate', note: 'x y' });
  t.is(got.ETag, `"${md5}"`);

  // A stream body: the SDK sends it aws-chunked (STREAMING-UNSIGNED-PAYLOAD-TRAILER) with a CRC-32 trailer.
  const streamed = randomBytes(200_000);
  const sput = await client.send(
    new PutObjectCommand({
      Bucket: 'clips',
      Key: 'streamed',
      Body: Readable.from([streamed.subarray(0, 70_000), streamed.subarray(70_000)]),
      ContentLength: streamed.length,
    }),
  );
  t.is(sput.ETag, `"${createHash('md5').update(streamed).digest('hex')}"`);
  const sget = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'streamed' }));
  t.true(Buffer.from(await sget.Body!.transformToByteArray()).equals(streamed));
  t.truthy(sget.ChecksumCRC32, 'the whole object comes with the CRC-32 the client sent');
  await client.send(new DeleteObjectCommand({ Bucket: 'clips', Key: 'streamed' }));

  // Virtual-host style: the SDK addresses http://clips.localhost:port/key (resolved to loopback here).
  const port = new URL(s3).port;
  const lookup = (_host: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void): void =>
    opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4);
  const vhost = new S3Client({
    endpoint: `http://localhost:${port}`,
    region: 'us-east-1',
    forcePathStyle: false,
    credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ lookup: lookup as never }) }),
  });
  t.teardown(() => vhost.destroy());
  const vh = await vhost.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Range: 'bytes=0-9' }));
  t.deepEqual(Buffer.from(await vh.Body!.transformToByteArray()), data.subarray(0, 10));

  // Ranges: a middle, an open end, a suffix; beyond the end is InvalidRange.
  const part = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Range: 'bytes=1000-1999' }));
  t.is(part.ContentRange, `bytes 1000-1999/${data.length}`);
  t.deepEqual(Buffer.from(await part.Body!.transformToByteArray()), data.subarray(1000, 2000));
  const tail = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Range: 'bytes=-100' }));
  t.deepEqual(Buffer.from(await tail.Body!.transformToByteArray()), data.subarray(data.length - 100));
  const from = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Range: 'bytes=299990-' }));
  t.is((await from.Body!.transformToByteArray()).length, 10);
  t.is((await s3Error(t, client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Range: 'bytes=300000-' })))).name, 'InvalidRange');

  // Conditions: If-Match, If-None-Match, If-Modified-Since.
  t.is((await s3Error(t, client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', IfMatch: '"0000"' })))).status, 412);
  const ok = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', IfMatch: `"${md5}"` }));
  await ok.Body!.transformToByteArray();
  t.is((await s3Error(t, client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', IfNoneMatch: `"${md5}"` })))).status, 304);
  t.is((await s3Error(t, client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', IfModifiedSince: new Date() })))).status, 304);
  const older = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', IfModifiedSince: new Date(Date.now() - 3_600_000) }));
  t.is((await older.Body!.transformToByteArray()).length, data.length);
  // If-None-Match: * on a PUT refuses an existing key.
  t.is((await s3Error(t, client.send(new PutObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Body: 'x', IfNoneMatch: '*' })))).status, 412);

  const head = await client.send(new HeadObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin' }));
  t.is(head.ContentLength, data.length);
  t.is(head.Metadata?.camera, 'gate');
  t.is((await s3Error(t, client.send(new HeadObjectCommand({ Bucket: 'clips', Key: 'missing' })))).status, 404);
  t.is((await s3Error(t, client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'missing' })))).name, 'NoSuchKey');

  // Overwrite: the new bytes, the old file gone.
  await client.send(new PutObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin', Body: 'short' }));
  const again = await client.send(new GetObjectCommand({ Bucket: 'clips', Key: 'cam 1/2026/ä+b.bin' }));
  t.is(await again.Body!.transformToString(), 'short');
  const files = async (): Promise<number> => {
    let n = 0;
    const dir = join(dataDir, 'buckets', 'objects', 'clips');
    for (const fan of await readdir(dir)) n += (await readdir(join(dir, fan))).length;
    return n;
  };
  t.is(await files(), 1, "the replaced version's file is gone");

  // Listing: 25 keys in 3 folders and 5 top-level, by pages of 7, and with a delimiter.
  const keys: string[] = [];
  for (const folder of ['a/', 'b/', 'c/']) for (let i = 0; i < 5; i++) keys.push(`${folder}k${i}`);
  for (let i = 0; i < 5; i++) keys.push(`top${i}`);
  for (const k of keys) await client.send(new PutObjectCommand({ Bucket: 'clips', Key: k, Body: k }));
  const all = [...keys, 'cam 1/2026/ä+b.bin'].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  const paged: string[] = [];
  let pages = 0;
  for await (const page of paginateListObjectsV2({ client, pageSize: 7 }, { Bucket: 'clips' })) {
    pages++;
    paged.push(...(page.Contents ?? []).map((c) => c.Key!));
  }
  t.deepEqual(paged, all);
  t.is(pages, Math.ceil(all.length / 7));
  const rolled = await client.send(new ListObjectsV2Command({ Bucket: 'clips', Delimiter: '/' }));
  t.deepEqual(
    rolled.CommonPrefixes?.map((p) => p.Prefix),
    ['a/', 'b/', 'c/', 'cam 1/'],
  );
  t.deepEqual(
    rolled.Contents?.map((c) => c.Key),
    ['top0', 'top1', 'top2', 'top3', 'top4'],
  );
  // Common prefixes count against MaxKeys and a continuation resumes after one.
  const first = await client.send(new ListObjectsV2Command({ Bucket: 'clips', Delimiter: '/', MaxKeys: 2 }));
  t.deepEqual(
    first.CommonPrefixes?.map((p) => p.Prefix),
    ['a/', 'b/'],
  );
  t.true(first.IsTruncated);
  const second = await client.send(new ListObjectsV2Command({ Bucket: 'clips', Delimiter: '/', MaxKeys: 3, ContinuationToken: first.NextContinuationToken }));
  t.deepEqual(
    second.CommonPrefixes?.map((p) => p.Prefix),
    ['c/', 'cam 1/'],
  );
  t.deepEqual(
    second.Contents?.map((c) => c.Key),
    ['top0'],
  );
  const inB = await client.send(new ListObjectsV2Command({ Bucket: 'clips', Prefix: 'b/', StartAfter: 'b/k1' }));
  t.deepEqual(
    inB.Contents?.map((c) => c.Key),
    ['b/k2', 'b/k3', 'b/k4'],
  );

  t.is((await s3Error(t, client.send(new DeleteBucketCommand({ Bucket: 'clips' })))).name, 'BucketNotEmpty');
  for (const k of all) await client.send(new DeleteObjectCommand({ Bucket: 'clips', Key: k }));
  await client.send(new DeleteObjectCommand({ Bucket: 'clips', Key: 'never-was' }));
  t.is((await client.send(new ListObjectsV2Command({ Bucket: 'clips' }))).KeyCount, 0);
  await client.send(new DeleteBucketCommand({ Bucket: 'clips' }));
  t.is((await s3Error(t, client.send(new ListObjectsV2Command({ Bucket: 'clips' })))).name, 'NoSuchBucket');
});

test('aws CLI: s3 mb, cp up and down, ls, rm, with a temp config and env credentials', async (t) => {
  const { s3, client } = await s3Node(t);
  const dir = await tempDir(t, 's3-cli-');
  await writeFile(join(dir, 'config'), '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n');
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_CONFIG_FILE: join(dir, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
  };
  const aws = async (...args: string[]): Promise<string> => (await run('aws', ['--endpoint-url', s3, ...args], { env, timeout: 60_000 })).stdout;
  await aws('s3', 'mb', 's3://cli-bucket');
  const src = join(dir, 'in.bin');
  const data = randomBytes(3 * 1024 * 1024 + 17);
  await writeFile(src, data);
  await aws('s3', 'cp', src, 's3://cli-bucket/dir/in.bin');
  await writeFile(join(dir, 'small.txt'), 'hello');
  await aws('s3', 'cp', join(dir, 'small.txt'), 's3://cli-bucket/small.txt');
  const ls = await aws('s3', 'ls', 's3://cli-bucket/');
  t.regex(ls, /PRE dir\//);
  t.regex(ls, /\b5 small\.txt/);
  t.regex(await aws('s3', 'ls', '--recursive', 's3://cli-bucket/'), new RegExp(`${data.length} dir/in\\.bin`));
  await aws('s3', 'cp', 's3://cli-bucket/dir/in.bin', join(dir, 'out.bin'));
  t.true((await readFile(join(dir, 'out.bin'))).equals(data));
  await aws('s3', 'rm', 's3://cli-bucket/dir/in.bin');
  const left = await client.send(new ListObjectsV2Command({ Bucket: 'cli-bucket' }));
  t.deepEqual(
    left.Contents?.map((c) => c.Key),
    ['small.txt'],
  );
  // A wrong secret: the CLI reports S3's error.
  const wrong = await t.throwsAsync(
    run('aws', ['--endpoint-url', s3, 's3', 'ls', 's3://cli-bucket/'], { env: { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' }, timeout: 60_000 }),
  );
  t.regex(String((wrong as Error & { stderr?: string }).stderr), /SignatureDoesNotMatch/);
});

test('bad input: wrong signatures, bad keys, short bodies and a 5 GiB PUT get S3 errors and store nothing', async (t) => {
  const { s3, client, dataDir } = await s3Node(t);
  await client.send(new CreateBucketCommand({ Bucket: 'bad-input' }));
  const wrong = new S3Client({
    endpoint: s3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: KEY, secretAccessKey: 'wrong-secret-key' },
  });
  t.teardown(() => wrong.destroy());
  t.is((await s3Error(t, wrong.send(new PutObjectCommand({ Bucket: 'bad-input', Key: 'k', Body: 'x' })))).name, 'SignatureDoesNotMatch');
  const stranger = new S3Client({
    endpoint: s3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'AKIDUNKNOWN', secretAccessKey: SECRET },
  });
  t.teardown(() => stranger.destroy());
  t.is((await s3Error(t, stranger.send(new ListBucketsCommand({})))).name, 'InvalidAccessKeyId');
  // Anonymous: a private bucket is refused.
  const anon = await fetch(`${s3}/bad-input/k`, { method: 'PUT', body: 'x' });
  t.is(anon.status, 403);
  t.regex(await anon.text(), /<Code>AccessDenied<\/Code>/);

  t.is((await s3Error(t, client.send(new PutObjectCommand({ Bucket: 'bad-input', Key: 'a/../etc/passwd', Body: 'x' })))).name, 'InvalidArgument');
  t.is((await s3Error(t, client.send(new PutObjectCommand({ Bucket: 'bad-input', Key: 'nul\0byte', Body: 'x' })))).name, 'InvalidArgument');
  t.is((await s3Error(t, client.send(new PutObjectCommand({ Bucket: 'bad-input', Key: 'k'.repeat(2048), Body: 'x' })))).name, 'KeyTooLongError');

  // A tampered body under a signed payload hash: the SHA-256 differs.
  const signedUrl = await getSignedUrl(client, new PutObjectCommand({ Bucket: 'bad-input', Key: 'presigned' }), { expiresIn: 60 });
  const viaUrl = await fetch(signedUrl, { method: 'PUT', body: 'by url' });
  t.is(viaUrl.status, 200, await viaUrl.text());

  // A body shorter than its Content-Length, the client then closes its side: nothing stored.
  const shortUrl = new URL(await getSignedUrl(client, new PutObjectCommand({ Bucket: 'bad-input', Key: 'short' }), { expiresIn: 60 }));
  const host = shortUrl.host;
  const answer = await rawExchange(
    s3,
    `PUT ${shortUrl.pathname}${shortUrl.search} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 1000\r\n\r\n`,
    Buffer.alloc(500, 1),
    { end: true },
  );
  t.regex(answer, /^HTTP\/1\.1 400[\s\S]*<Code>IncompleteBody<\/Code>/);
  // A 5 GiB + 1 PUT: EntityTooLarge at once, before a byte of the body.
  const bigUrl = new URL(await getSignedUrl(client, new PutObjectCommand({ Bucket: 'bad-input', Key: 'big' }), { expiresIn: 60 }));
  const big = await rawExchange(
    s3,
    `PUT ${bigUrl.pathname}${bigUrl.search} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${5 * 1024 ** 3 + 1}\r\n\r\n`,
    Buffer.alloc(0),
  );
  t.regex(big, /^HTTP\/1\.1 400/);
  t.regex(big, /<Code>EntityTooLarge<\/Code>/);

  const listed = await client.send(new ListObjectsV2Command({ Bucket: 'bad-input' }));
  t.deepEqual(
    listed.Contents?.map((c) => c.Key),
    ['presigned'],
  );
  // The cut upload's tmp file goes as its request ends (after the parser already answered).
  await waitFor('no upload left half-way', async () => (await readdir(join(dataDir, 'buckets', 'tmp'))).length === 0, 10_000, 50);
});

test('start-up sweep: tmp files and object files no record names are removed, objects kept', async (t) => {
  const dir = await tempDir(t);
  const first = await s3Node(t, { dataDir: dir });
  await first.client.send(new CreateBucketCommand({ Bucket: 'keep' }));
  await first.client.send(new PutObjectCommand({ Bucket: 'keep', Key: 'k', Body: 'kept bytes' }));
  await first.node.stop();
  // What a kill -9 leaves: an upload in tmp/, a renamed file whose commit never happened.
  await writeFile(join(dir, 'buckets', 'tmp', '0000abcdef'), 'half');
  const fan = join(dir, 'buckets', 'objects', 'keep', 'zz');
  await mkdir(fan, { recursive: true });
  await writeFile(join(fan, '00000000000000zz'), 'torn');
  const second = await s3Node(t, { dataDir: dir });
  t.false(existsSync(join(dir, 'buckets', 'tmp', '0000abcdef')));
  t.false(existsSync(join(fan, '00000000000000zz')));
  const got = await second.client.send(new GetObjectCommand({ Bucket: 'keep', Key: 'k' }));
  t.is(await got.Body!.transformToString(), 'kept bytes');
});

test('a lost catalog: after the index is rebuilt (recorder reindex), buckets and objects come back from the object files', async (t) => {
  const dir = await tempDir(t);
  const first = await s3Node(t, { dataDir: dir });
  await first.client.send(new CreateBucketCommand({ Bucket: 'survivor' }));
  await first.client.send(new PutObjectCommand({ Bucket: 'survivor', Key: 'doc.txt', Body: 'old', ContentType: 'text/plain' }));
  await first.client.send(
    new PutObjectCommand({ Bucket: 'survivor', Key: 'doc.txt', Body: 'newest', ContentType: 'text/plain', Metadata: { camera: 'gate' } }),
  );
  await first.client.send(new PutObjectCommand({ Bucket: 'survivor', Key: 'dir/b.bin', Body: 'bee' }));
  await first.node.stop();
  await rm(join(dir, 'index'), { recursive: true, force: true });
  await run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'recorder.ts'), 'reindex'], {
    env: { ...process.env, RECORDER_DATA_DIR: dir, RECORDER_LOG_LEVEL: 'silent' },
    timeout: 60_000,
  });
  const second = await s3Node(t, { dataDir: dir });
  const listed = await second.client.send(new ListObjectsV2Command({ Bucket: 'survivor' }));
  t.deepEqual(
    listed.Contents?.map((o) => o.Key),
    ['dir/b.bin', 'doc.txt'],
  );
  const got = await second.client.send(new GetObjectCommand({ Bucket: 'survivor', Key: 'doc.txt' }));
  t.is(await got.Body!.transformToString(), 'newest');
  t.is(got.ContentType, 'text/plain');
  t.deepEqual(got.Metadata, { camera: 'gate' });
});
