/**
 * S3 versioning, lifecycle, canned ACLs and presigned URLs (issue 17 slice 3) with the
 * AWS SDK and `aws s3api`: versions listed newest first, read by id, delete markers and
 * their removal, a suspended bucket's null version; keeping N versions; expiry by days
 * (the node's clock and the client's moved two days on); anonymous access exactly where
 * an ACL opens it; a presigned URL before and after its expiry.
 */
import test from 'ava';
import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutBucketLifecycleConfigurationCommand,
  PutBucketVersioningCommand,
  PutObjectAclCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { startNode, tempDir } from './helpers/recorder.ts';
import { S3_KEY as KEY, S3_SECRET as SECRET, s3Client, s3Code as code, s3Node } from './helpers/s3.ts';

const run = promisify(execFile);
const DAY = 86_400_000;

async function text(c: S3Client, Bucket: string, Key: string, VersionId?: string): Promise<string> {
  const got = await c.send(new GetObjectCommand({ Bucket, Key, ...(VersionId ? { VersionId } : {}) }));
  return got.Body!.transformToString();
}

async function objectFiles(dataDir: string, bucket: string): Promise<number> {
  let n = 0;
  const dir = join(dataDir, 'buckets', 'objects', bucket);
  for (const fan of await readdir(dir)) n += (await readdir(join(dir, fan))).length;
  return n;
}

test('versioning: versions by id, delete markers, removing a version, a suspended bucket, aws s3api', async (t) => {
  const { client: c, s3, dataDir } = await s3Node(t);
  await c.send(new CreateBucketCommand({ Bucket: 'vers' }));
  await c.send(new PutObjectCommand({ Bucket: 'vers', Key: 'doc', Body: 'v0 unversioned' }));
  await c.send(new PutBucketVersioningCommand({ Bucket: 'vers', VersioningConfiguration: { Status: 'Enabled' } }));
  const ids: string[] = [];
  for (const v of ['v1', 'v2', 'v3']) ids.push((await c.send(new PutObjectCommand({ Bucket: 'vers', Key: 'doc', Body: v }))).VersionId!);
  t.is(new Set(ids).size, 3);
  t.is(await text(c, 'vers', 'doc'), 'v3');
  t.is(await text(c, 'vers', 'doc', ids[0]), 'v1');
  t.is(await text(c, 'vers', 'doc', 'null'), 'v0 unversioned', 'the version from before versioning is the null version');
  const listed = await c.send(new ListObjectVersionsCommand({ Bucket: 'vers' }));
  t.deepEqual(
    listed.Versions?.map((v) => [v.VersionId, v.IsLatest]),
    [
      [ids[2], true],
      [ids[1], false],
      [ids[0], false],
      ['null', false],
    ],
  );
  t.is(await objectFiles(dataDir, 'vers'), 4);

  // A delete without a version id: a marker; the key reads as gone, its versions stay.
  const del = await c.send(new DeleteObjectCommand({ Bucket: 'vers', Key: 'doc' }));
  t.true(del.DeleteMarker);
  t.is(await code(t, c.send(new GetObjectCommand({ Bucket: 'vers', Key: 'doc' }))), 'NoSuchKey');
  t.is((await c.send(new ListObjectsV2Command({ Bucket: 'vers' }))).KeyCount, 0);
  t.is(await text(c, 'vers', 'doc', ids[1]), 'v2');
  const withMarker = await c.send(new ListObjectVersionsCommand({ Bucket: 'vers' }));
  t.deepEqual(
    withMarker.DeleteMarkers?.map((m) => [m.VersionId, m.IsLatest]),
    [[del.VersionId, true]],
  );
  // Removing the marker brings v3 back; removing v2 for good leaves the others.
  await c.send(new DeleteObjectCommand({ Bucket: 'vers', Key: 'doc', VersionId: del.VersionId }));
  t.is(await text(c, 'vers', 'doc'), 'v3');
  await c.send(new DeleteObjectCommand({ Bucket: 'vers', Key: 'doc', VersionId: ids[1] }));
  t.is(await code(t, c.send(new GetObjectCommand({ Bucket: 'vers', Key: 'doc', VersionId: ids[1] }))), 'NoSuchVersion');
  t.is(await objectFiles(dataDir, 'vers'), 3, "v2's file is gone");
  // Removing the current version makes the newest older one current.
  await c.send(new DeleteObjectCommand({ Bucket: 'vers', Key: 'doc', VersionId: ids[2] }));
  t.is(await text(c, 'vers', 'doc'), 'v1');
  t.is((await c.send(new HeadObjectCommand({ Bucket: 'vers', Key: 'doc' }))).VersionId, ids[0]);

  // Suspended: new writes are the null version, replacing the old null one.
  await c.send(new PutBucketVersioningCommand({ Bucket: 'vers', VersioningConfiguration: { Status: 'Suspended' } }));
  t.is((await c.send(new PutObjectCommand({ Bucket: 'vers', Key: 'doc', Body: 'n1' }))).VersionId, 'null');
  await c.send(new PutObjectCommand({ Bucket: 'vers', Key: 'doc', Body: 'n2' }));
  const susp = await c.send(new ListObjectVersionsCommand({ Bucket: 'vers' }));
  t.deepEqual(
    susp.Versions?.map((v) => v.VersionId),
    ['null', ids[0]],
  );
  t.is(await text(c, 'vers', 'doc'), 'n2');

  // The CLI's s3api sees the same.
  const dir = await tempDir(t, 's3-api-');
  await writeFile(join(dir, 'config'), '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n');
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_CONFIG_FILE: join(dir, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
  };
  const api = async (...args: string[]): Promise<unknown> =>
    JSON.parse((await run('aws', ['--endpoint-url', s3, '--output', 'json', 's3api', ...args], { env, timeout: 60_000 })).stdout || '{}');
  await api('create-bucket', '--bucket', 'cli-vers');
  await api('put-bucket-versioning', '--bucket', 'cli-vers', '--versioning-configuration', 'Status=Enabled');
  t.deepEqual(await api('get-bucket-versioning', '--bucket', 'cli-vers'), { Status: 'Enabled' });
  await writeFile(join(dir, 'f'), 'one');
  await api('put-object', '--bucket', 'cli-vers', '--key', 'k', '--body', join(dir, 'f'));
  await writeFile(join(dir, 'f'), 'two');
  await api('put-object', '--bucket', 'cli-vers', '--key', 'k', '--body', join(dir, 'f'));
  const versions = (await api('list-object-versions', '--bucket', 'cli-vers')) as { Versions: { IsLatest: boolean }[] };
  t.deepEqual(
    versions.Versions.map((v) => v.IsLatest),
    [true, false],
  );
});

test('lifecycle: keep N versions, expiry by days, old uploads aborted (clocks moved two days on)', async (t) => {
  const offset = { ms: 0 };
  const { client: c, node, dataDir, s3 } = await s3Node(t, { offset });
  await c.send(new CreateBucketCommand({ Bucket: 'life' }));
  await c.send(new PutBucketVersioningCommand({ Bucket: 'life', VersioningConfiguration: { Status: 'Enabled' } }));
  await c.send(
    new PutBucketLifecycleConfigurationCommand({
      Bucket: 'life',
      LifecycleConfiguration: {
        Rules: [
          { ID: 'keep-2', Status: 'Enabled', Filter: { Prefix: 'docs/' }, NoncurrentVersionExpiration: { NoncurrentDays: 0, NewerNoncurrentVersions: 2 } },
          { ID: 'tmp-1d', Status: 'Enabled', Filter: { Prefix: 'tmp/' }, Expiration: { Days: 1 }, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } },
        ],
      },
    }),
  );
  for (let i = 1; i <= 5; i++) await c.send(new PutObjectCommand({ Bucket: 'life', Key: 'docs/a', Body: `a${i}` }));
  const kept = await c.send(new ListObjectVersionsCommand({ Bucket: 'life', Prefix: 'docs/' }));
  t.is(kept.Versions?.length, 3, 'the current version and the 2 newest noncurrent ones');
  t.is(await text(c, 'life', 'docs/a'), 'a5');
  t.is(await objectFiles(dataDir, 'life'), 3);

  await c.send(new PutObjectCommand({ Bucket: 'life', Key: 'tmp/scratch', Body: 'x' }));
  await c.send(new PutObjectCommand({ Bucket: 'life', Key: 'keep/me', Body: 'y' }));
  await c.send(new CreateMultipartUploadCommand({ Bucket: 'life', Key: 'tmp/upload' }));
  // Nothing is old enough yet.
  t.deepEqual(await node.s3!.lifecycle(), { expired: 0, noncurrent: 0, uploads: 0 });
  offset.ms = 2 * DAY;
  const later = new S3Client({
    endpoint: s3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    systemClockOffset: 2 * DAY,
  });
  t.teardown(() => later.destroy());
  const report = await node.s3!.lifecycle();
  t.is(report.expired, 1);
  t.is(report.uploads, 1);
  t.is(await code(t, later.send(new GetObjectCommand({ Bucket: 'life', Key: 'tmp/scratch' }))), 'NoSuchKey');
  t.is(await text(later, 'life', 'keep/me'), 'y');
  t.is(await text(later, 'life', 'docs/a'), 'a5');
  t.is((await later.send(new ListMultipartUploadsCommand({ Bucket: 'life' }))).Uploads, undefined);
  // The first client's clock is now 2 days off: refused once, it corrects its skew from the Date the recorder sends (its own clock).
  const listed = await c.send(new ListObjectsV2Command({ Bucket: 'life' }));
  t.is(listed.$metadata.attempts, 2);
  t.deepEqual(
    listed.Contents?.map((o) => o.Key),
    ['docs/a', 'keep/me'],
  );
});

test('canned ACLs and presigned URLs: anonymous access only where an ACL opens it; an expired URL is refused', async (t) => {
  const { client: c, s3 } = await s3Node(t);
  await c.send(new CreateBucketCommand({ Bucket: 'open-read', ACL: 'public-read' }));
  await c.send(new CreateBucketCommand({ Bucket: 'open-write', ACL: 'public-read-write' }));
  await c.send(new CreateBucketCommand({ Bucket: 'closed' }));
  for (const b of ['open-read', 'open-write', 'closed']) await c.send(new PutObjectCommand({ Bucket: b, Key: 'f.txt', Body: `in ${b}` }));
  t.is(await (await fetch(`${s3}/open-read/f.txt`)).text(), 'in open-read');
  t.regex(await (await fetch(`${s3}/open-read?list-type=2`)).text(), /<Key>f\.txt<\/Key>/);
  t.is((await fetch(`${s3}/open-read/new.txt`, { method: 'PUT', body: 'x' })).status, 403);
  t.is((await fetch(`${s3}/open-write/new.txt`, { method: 'PUT', body: 'anon' })).status, 200);
  t.is(await text(c, 'open-write', 'new.txt'), 'anon');
  t.is((await fetch(`${s3}/closed/f.txt`)).status, 403);
  t.is((await fetch(`${s3}/`)).status, 403, 'anonymous ListBuckets');
  // An object made public in a private bucket; its ACL as S3 shows it.
  await c.send(new PutObjectAclCommand({ Bucket: 'closed', Key: 'f.txt', ACL: 'public-read' }));
  t.is(await (await fetch(`${s3}/closed/f.txt`)).text(), 'in closed');
  const acl = await c.send(new GetObjectAclCommand({ Bucket: 'closed', Key: 'f.txt' }));
  t.deepEqual(acl.Grants?.map((g) => g.Permission).sort(), ['FULL_CONTROL', 'READ']);
  t.is((await fetch(`${s3}/closed?list-type=2`)).status, 403, 'the bucket stays closed');

  await c.send(new PutObjectCommand({ Bucket: 'closed', Key: 'secret.txt', Body: 'by url' }));
  const url = await getSignedUrl(c, new GetObjectCommand({ Bucket: 'closed', Key: 'secret.txt' }), { expiresIn: 60 });
  t.is(await (await fetch(url)).text(), 'by url');
  const stale = await getSignedUrl(c, new GetObjectCommand({ Bucket: 'closed', Key: 'secret.txt' }), {
    expiresIn: 60,
    signingDate: new Date(Date.now() - 120_000),
  });
  const refused = await fetch(stale);
  t.is(refused.status, 403);
  t.regex(await refused.text(), /<Code>AccessDenied<\/Code><Message>Request has expired<\/Message>/);
  const tampered = url.replace('secret.txt', 'f.txt');
  t.is((await fetch(tampered)).status, 403);
});

test("users' access keys: issued over HTTP, a user sees only the buckets of their pools, viewers only read, a revoked key is refused", async (t) => {
  const TOKEN = 'admin-token-0123456789abcdef';
  const n = await startNode(t, { s3: '127.0.0.1:0', s3AccessKey: KEY, s3SecretKey: SECRET, authToken: TOKEN });
  const s3 = n.node.s3Url;
  const http = async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${n.http}${path}`, {
      method,
      headers: { Authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as T };
  };
  for (const pool of ['p1', 'p2']) t.is((await http('PUT', `/api/pools/${pool}`, { capacityBytes: null, overwrite: 'capacity' })).status, 200);
  const root = s3Client(t, s3);
  await root.send(new CreateBucketCommand({ Bucket: 'pool-one', CreateBucketConfiguration: { LocationConstraint: 'p1' as never } }));
  await root.send(new CreateBucketCommand({ Bucket: 'pool-two', CreateBucketConfiguration: { LocationConstraint: 'p2' as never } }));
  t.is(
    await code(t, root.send(new CreateBucketCommand({ Bucket: 'pool-none', CreateBucketConfiguration: { LocationConstraint: 'nope' as never } }))),
    'InvalidLocationConstraint',
  );
  await root.send(new PutObjectCommand({ Bucket: 'pool-two', Key: 'two.txt', Body: 'in two' }));
  t.is((await http('PUT', '/api/users/alice', { role: 'operator', pools: ['p1'], password: 'alice-password' })).status, 200);
  t.is((await http('PUT', '/api/users/victor', { role: 'viewer', pools: ['p2'], password: 'victor-password' })).status, 200);
  const issued = await http<{ accessKeyId: string; secretAccessKey: string }>('POST', '/api/users/alice/s3-keys');
  t.is(issued.status, 201);
  const vkey = (await http<{ accessKeyId: string; secretAccessKey: string }>('POST', '/api/users/victor/s3-keys')).body;
  const listedKeys = await http<{ keys: Record<string, unknown>[] }>('GET', '/api/users/alice/s3-keys');
  t.deepEqual(
    listedKeys.body.keys.map((k) => k.accessKeyId),
    [issued.body.accessKeyId],
  );
  t.false(JSON.stringify(listedKeys.body).includes(issued.body.secretAccessKey), 'the secret is shown once');
  t.is((await http('POST', '/api/users/nobody/s3-keys')).status, 404);

  const as = (id: string, secret: string): S3Client => s3Client(t, s3, { accessKeyId: id, secretAccessKey: secret });
  const alice = as(issued.body.accessKeyId, issued.body.secretAccessKey);
  const victor = as(vkey.accessKeyId, vkey.secretAccessKey);
  t.deepEqual(
    (await alice.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name),
    ['pool-one'],
  );
  await alice.send(new PutObjectCommand({ Bucket: 'pool-one', Key: 'a.txt', Body: 'by alice' }));
  t.is(await code(t, alice.send(new GetObjectCommand({ Bucket: 'pool-two', Key: 'two.txt' }))), 'NoSuchBucket', "another pool's bucket does not exist for her");
  t.is(
    await code(t, alice.send(new CreateBucketCommand({ Bucket: 'alice-two', CreateBucketConfiguration: { LocationConstraint: 'p2' as never } }))),
    'AccessDenied',
  );
  await alice.send(new CreateBucketCommand({ Bucket: 'alice-one', CreateBucketConfiguration: { LocationConstraint: 'p1' as never } }));
  t.is(await text(victor, 'pool-two', 'two.txt'), 'in two');
  t.is(await code(t, victor.send(new PutObjectCommand({ Bucket: 'pool-two', Key: 'v.txt', Body: 'x' }))), 'AccessDenied', 'a viewer only reads');
  t.deepEqual(
    (await victor.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name),
    ['pool-two'],
  );
  t.is((await http('DELETE', `/api/users/alice/s3-keys/${issued.body.accessKeyId}`)).status, 200);
  t.is(await code(t, alice.send(new ListBucketsCommand({}))), 'InvalidAccessKeyId');
});

test("users' S3 secrets are sealed at rest: never in the index in clear, clear ones from before sealed at start, refused under another key file", async (t) => {
  const TOKEN = 'admin-token-0123456789abcdef';
  const dataDir = await tempDir(t);
  const settings = { s3: '127.0.0.1:0', s3AccessKey: KEY, s3SecretKey: SECRET, authToken: TOKEN };
  const admin = (http: string) => (method: string, path: string, body?: unknown) =>
    fetch(`${http}${path}`, {
      method,
      headers: { Authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const first = await startNode(t, settings, dataDir);
  t.is((await admin(first.http)('PUT', '/api/users/alice', { role: 'operator', pools: ['default'], password: 'alice-password' })).status, 200);
  const issued = (await (await admin(first.http)('POST', '/api/users/alice/s3-keys')).json()) as { accessKeyId: string; secretAccessKey: string };
  const alice = (s3: string) => s3Client(t, s3, { accessKeyId: issued.accessKeyId, secretAccessKey: issued.secretAccessKey });
  await alice(first.node.s3Url).send(new CreateBucketCommand({ Bucket: 'sealed' }));
  const presigned = await admin(first.http)('POST', '/api/s3/presign', { method: 'GET', bucket: 'sealed' });
  t.is(presigned.status, 200, 'the UI presigns with the opened secret');
  await first.node.stop();
  const indexBytes = await Promise.all((await readdir(join(dataDir, 'index'))).map((f) => readFile(join(dataDir, 'index', f))));
  t.false(
    indexBytes.some((b) => b.includes(issued.secretAccessKey)),
    'the secret is nowhere in the index files',
  );
  const keyFile = await readFile(join(dataDir, 'secret.key'));
  t.is(keyFile.length, 32);

  // An index from before sealing: a secret in clear, sealed by the next start and still working.
  const legacy = { accessKeyId: 'RKLEGACYKEY0000000000000', user: 'alice', secret: 'legacy-clear-secret-0123456789', createdMs: Date.now() };
  const index = await RecorderIndex.open(dataDir);
  await index.buckets.putAccessKey(legacy);
  await index.close();
  const second = await startNode(t, settings, dataDir);
  const old = s3Client(t, second.node.s3Url, { accessKeyId: legacy.accessKeyId, secretAccessKey: legacy.secret });
  t.deepEqual(
    (await old.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name),
    ['sealed'],
  );
  await second.node.stop();
  const reopened = await RecorderIndex.open(dataDir);
  const stored = reopened.buckets.accessKey(legacy.accessKeyId)!.secret;
  await reopened.close();
  t.true(stored.startsWith('sealed:v1:') && !stored.includes(legacy.secret), 'sealed at start');

  // Another key file (the data disk moved without its key): the keys are refused, not misread; issued again they work.
  const lines: string[] = [];
  const third = await startNode(t, { ...settings, secretKeyFile: join(dataDir, 'other.key') }, dataDir, { logLines: lines });
  t.is(await code(t, alice(third.node.s3Url).send(new ListBucketsCommand({}))), 'InvalidAccessKeyId');
  t.true(
    lines.some((l) => l.includes('sealed under another secret key file') && l.includes(issued.accessKeyId)),
    'said once at start',
  );
  const again = (await (await admin(third.http)('POST', '/api/users/alice/s3-keys')).json()) as { accessKeyId: string; secretAccessKey: string };
  const reissued = s3Client(t, third.node.s3Url, { accessKeyId: again.accessKeyId, secretAccessKey: again.secretAccessKey });
  t.deepEqual(
    (await reissued.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name),
    ['sealed'],
  );
});

test("a pool's capacity holds for its buckets' objects: an upload that would pass it is refused, nothing stored", async (t) => {
  const TOKEN = 'admin-token-0123456789abcdef';
  const n = await startNode(t, { s3: '127.0.0.1:0', s3AccessKey: KEY, s3SecretKey: SECRET, authToken: TOKEN });
  const put = await fetch(`${n.http}/api/pools/tiny`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ capacityBytes: 1_000_000, overwrite: 'capacity' }),
  });
  t.is(put.status, 200);
  const c = new S3Client({
    endpoint: n.node.s3Url,
    region: 'us-east-1',
    forcePathStyle: true,
    maxAttempts: 1,
    credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
  });
  t.teardown(() => c.destroy());
  await c.send(new CreateBucketCommand({ Bucket: 'tiny-bucket', CreateBucketConfiguration: { LocationConstraint: 'tiny' as never } }));
  await c.send(new PutObjectCommand({ Bucket: 'tiny-bucket', Key: 'a', Body: Buffer.alloc(600_000, 1) }));
  t.is(await code(t, c.send(new PutObjectCommand({ Bucket: 'tiny-bucket', Key: 'b', Body: Buffer.alloc(600_000, 2) }))), 'InsufficientStorage');
  t.deepEqual(
    (await c.send(new ListObjectsV2Command({ Bucket: 'tiny-bucket' }))).Contents?.map((o) => o.Key),
    ['a'],
  );
  // Room again once an object goes.
  await c.send(new DeleteObjectCommand({ Bucket: 'tiny-bucket', Key: 'a' }));
  await c.send(new PutObjectCommand({ Bucket: 'tiny-bucket', Key: 'b', Body: Buffer.alloc(600_000, 2) }));
});

test("uploads in flight hold their pool's room: of two concurrent uploads that each fit but not together, one is refused and nothing is stored half-way", async (t) => {
  const TOKEN = 'admin-token-0123456789abcdef';
  const n = await startNode(t, { s3: '127.0.0.1:0', s3AccessKey: KEY, s3SecretKey: SECRET, authToken: TOKEN });
  const put = await fetch(`${n.http}/api/pools/tiny`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ capacityBytes: 1_000_000, overwrite: 'capacity' }),
  });
  t.is(put.status, 200);
  const c = new S3Client({
    endpoint: n.node.s3Url,
    region: 'us-east-1',
    forcePathStyle: true,
    maxAttempts: 1,
    credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
  });
  t.teardown(() => c.destroy());
  await c.send(new CreateBucketCommand({ Bucket: 'tiny-bucket', CreateBucketConfiguration: { LocationConstraint: 'tiny' as never } }));
  // Presigned PUTs whose bodies arrive slowly: both requests are in before either body ends.
  const url = (key: string): Promise<string> => getSignedUrl(c, new PutObjectCommand({ Bucket: 'tiny-bucket', Key: key }), { expiresIn: 300 });
  const slowPut = async (key: string): Promise<number> => {
    const body = Buffer.alloc(600_000, key.charCodeAt(0));
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        for (let i = 0; i < body.length; i += 100_000) {
          controller.enqueue(body.subarray(i, i + 100_000));
          await new Promise((r) => setTimeout(r, 50));
        }
        controller.close();
      },
    });
    const res = await fetch(await url(key), { method: 'PUT', body: stream, headers: { 'Content-Length': String(body.length) }, duplex: 'half' });
    await res.arrayBuffer();
    return res.status;
  };
  const statuses = await Promise.all([slowPut('a'), slowPut('b')]);
  t.deepEqual([...statuses].sort(), [200, 507], `statuses ${statuses.join(', ')}`);
  const listed = await c.send(new ListObjectsV2Command({ Bucket: 'tiny-bucket' }));
  t.is(listed.Contents?.length, 1, JSON.stringify(listed.Contents));
  t.is(listed.Contents?.[0]?.Size, 600_000);
});
