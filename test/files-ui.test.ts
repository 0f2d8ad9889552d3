/**
 * The web UI's Files panel (issue 17 item 5): buckets and objects listed, upload and
 * download in a real browser (Debian's Chromium), through presigned URLs the HTTP API
 * signs (POST /api/s3/presign) and the S3 listener answers across origins (CORS). And
 * the presign route's rules: the user's own key and pools, root only for admins, a
 * typed error without a key, no CORS for a foreign page.
 */
import test from 'ava';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { launchChromium } from './helpers/browser.ts';
import { startNode, tempDir } from './helpers/recorder.ts';
import { S3_KEY, S3_SECRET, s3Client, s3Code, s3Node } from './helpers/s3.ts';

test('the Files panel lists buckets and folders, uploads, downloads and deletes in Chromium', async (t) => {
  const n = await s3Node(t);
  await n.client.send(new CreateBucketCommand({ Bucket: 'evidence' }));
  await n.client.send(new PutObjectCommand({ Bucket: 'evidence', Key: 'case-17/report.txt', Body: 'the report' }));

  const browser = await launchChromium(t);
  const page = await browser.newPage();
  page.on('dialog', (d) => void d.accept());
  await page.goto(`${n.http}/`);
  await page.click('#files-button');
  await page.click('#files tbody tr[data-kind="bucket"] button:text("evidence")');
  await page.click('#files tbody tr[data-kind="folder"] button:text("case-17/")');
  await page.waitForSelector('#files tbody tr[data-kind="file"] td:text("report.txt")');
  t.is(await page.textContent('#files-path'), 'evidence/case-17/');

  // Upload: 3 MB of random bytes from a file input, PUT straight to the S3 listener.
  const dir = await tempDir(t);
  const source = join(dir, 'clip.bin');
  const bytes = randomBytes(3 * 1024 * 1024);
  await writeFile(source, bytes);
  await page.setInputFiles('#files-upload', source);
  await page.waitForSelector('#files tbody tr[data-kind="file"] td:text("clip.bin")', { timeout: 30_000 });
  const head = await n.client.send(new HeadObjectCommand({ Bucket: 'evidence', Key: 'case-17/clip.bin' }));
  t.is(head.ContentLength, bytes.length, 'stored whole through S3');
  const stored = await n.client.send(new GetObjectCommand({ Bucket: 'evidence', Key: 'case-17/clip.bin' }));
  t.true(Buffer.from(await stored.Body!.transformToByteArray()).equals(bytes), 'the bytes the browser sent');

  // Download: the browser saves the object under its name, byte for byte.
  const row = page.locator('#files tbody tr[data-kind="file"]', { hasText: 'clip.bin' });
  const [download] = await Promise.all([page.waitForEvent('download'), row.locator('button:text("Download")').click()]);
  t.is(download.suggestedFilename(), 'clip.bin');
  t.true((await readFile(await download.path())).equals(bytes));

  // Delete (confirmed), then up to the bucket list.
  await row.locator('button:text("Delete")').click();
  await page.waitForSelector('#files tbody tr[data-kind="file"] td:text("clip.bin")', { state: 'detached' });
  const left = await n.client.send(new ListObjectsV2Command({ Bucket: 'evidence' }));
  t.deepEqual(
    left.Contents?.map((o) => o.Key),
    ['case-17/report.txt'],
  );
  await page.click('#files-up');
  await page.click('#files-up');
  await page.waitForSelector('#files tbody tr[data-kind="bucket"]');
  t.is(await page.textContent('#files-path'), 'buckets');
  t.true(await page.isHidden('#error'), (await page.textContent('#error')) ?? '');
});

test("a presigned URL acts as the asking user's own key: their pools only; no key is a typed error; no CORS for a foreign page", async (t) => {
  const TOKEN = 'admin-token-0123456789abcdef';
  const n = await startNode(t, { s3: '127.0.0.1:0', s3AccessKey: S3_KEY, s3SecretKey: S3_SECRET, authToken: TOKEN });
  const http = async <T>(method: string, path: string, body: unknown, auth = `Bearer ${TOKEN}`): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${n.http}${path}`, { method, headers: { Authorization: auth, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as T };
  };
  for (const pool of ['p1', 'p2']) t.is((await http('PUT', `/api/pools/${pool}`, { capacityBytes: null, overwrite: 'capacity' })).status, 200);
  const root = s3Client(t, n.node.s3Url);
  await root.send(new CreateBucketCommand({ Bucket: 'one', CreateBucketConfiguration: { LocationConstraint: 'p1' as never } }));
  await root.send(new CreateBucketCommand({ Bucket: 'two', CreateBucketConfiguration: { LocationConstraint: 'p2' as never } }));
  t.is((await http('PUT', '/api/users/alice', { role: 'operator', pools: ['p1'], password: 'alice-password' })).status, 200);
  const alice = `Basic ${Buffer.from('alice:alice-password').toString('base64')}`;

  // No key of her own yet, and not an admin: a typed error, not the root key.
  const none = await http<{ error: { code: string } }>('POST', '/api/s3/presign', { method: 'GET' }, alice);
  t.deepEqual([none.status, none.body.error.code], [409, 'S3_UNAVAILABLE']);
  t.is((await http('POST', '/api/users/alice/s3-keys', {})).status, 201);

  const signed = await http<{ url: string; user: string }>('POST', '/api/s3/presign', { method: 'GET' }, alice);
  t.is(signed.status, 200);
  t.is(signed.body.user, 'alice');
  const list = await (await fetch(signed.body.url)).text();
  t.regex(list, /<Name>one<\/Name>/);
  t.notRegex(list, /<Name>two<\/Name>/, "another pool's bucket is not hers");
  const put = await http<{ url: string }>('POST', '/api/s3/presign', { method: 'PUT', bucket: 'two', key: 'x' }, alice);
  const refused = await fetch(put.body.url, { method: 'PUT', body: 'x' });
  t.is(refused.status, 404, 'S3 refuses her a bucket of another pool: it does not exist for her');
  t.regex(await refused.text(), /<Code>NoSuchBucket<\/Code>/);
  t.is(await s3Code(t, root.send(new HeadObjectCommand({ Bucket: 'two', Key: 'x' }))), 'NotFound', 'nothing stored');

  // The admin (token) signs with the settings' root key.
  const admin = await http<{ user: string }>('POST', '/api/s3/presign', { method: 'GET', bucket: 'two' });
  t.is(admin.body.user, 'root');
  // Bad input: typed, nothing signed.
  const bad = await http<{ error: { code: string } }>('POST', '/api/s3/presign', { method: 'POST', bucket: 'Not_A_Bucket', query: { 'x-id': 'a' } });
  t.deepEqual([bad.status, bad.body.error.code], [400, 'VALIDATION_FAILED']);

  // CORS: the recorder's own UI gets its preflight answered; a foreign page does not.
  const preflight = (origin: string): Promise<Response> =>
    fetch(`${n.node.s3Url}/one/x`, { method: 'OPTIONS', headers: { Origin: origin, 'Access-Control-Request-Method': 'PUT' } });
  const own = await preflight(n.http);
  t.is(own.status, 200);
  t.is(own.headers.get('access-control-allow-origin'), n.http);
  const foreign = await preflight('http://evil.example:1234');
  t.is(foreign.status, 403);
  t.is(foreign.headers.get('access-control-allow-origin'), null);
});
