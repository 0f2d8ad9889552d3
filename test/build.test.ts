/**
 * The recorder users run: `npm start` / `npm run demo` build it (scripts/build.ts) and
 * run the compiled JavaScript. Built here into a temp dir, started with `--demo`: the
 * demo camera records and is searchable, the web UI's files are served from beside
 * the compiled code, an S3 upload large enough to be hashed in the worker thread (its
 * file must be in the build: nothing imports it) is stored with the right ETag, and
 * SIGTERM stops it with exit 0 leaving no child behind.
 */
import test from 'ava';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { access, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../lib/nats-embedded.ts';
import { spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';
import { S3_KEY, S3_SECRET, s3Client } from './helpers/s3.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');

async function processesMentioning(text: string): Promise<string[]> {
  const { stdout } = await run('ps', ['-eo', 'pid,args', '--no-headers']);
  return stdout.split('\n').filter((l) => l.includes(text) && !l.includes(' ps -eo'));
}

test('the compiled recorder runs the demo: a camera recorded and searchable, the UI served, a clean stop', async (t) => {
  const out = await tempDir(t, 'rec-build-');
  await run(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'build.ts'), out], { cwd: ROOT });
  await access(join(out, 'recorder.js'));
  // Outside the repository the output needs the dependencies and "type": "module".
  await symlink(join(ROOT, 'node_modules'), join(out, 'node_modules'));
  await symlink(join(ROOT, 'package.json'), join(out, 'package.json'));

  const dataDir = await tempDir(t);
  const s3Port = await freePort();
  const rec = spawnRecorder(
    t,
    {
      RECORDER_DATA_DIR: dataDir,
      RECORDER_HTTP: '127.0.0.1:0',
      RECORDER_S3: `127.0.0.1:${s3Port}`,
      RECORDER_S3_ACCESS_KEY: S3_KEY,
      RECORDER_S3_SECRET_KEY: S3_SECRET,
    },
    { entry: join(out, 'recorder.js'), args: ['--demo'] },
  );
  const http = await rec.http;
  const recorded = await waitFor(
    '6 s of demo video',
    async () => {
      const now = Date.now();
      const res = await fetch(`${http}/api/recordings?camera=demo&from=${new Date(now - 120_000).toISOString()}&to=${new Date(now + 60_000).toISOString()}`);
      if (res.status !== 200) return null;
      // Any span: an attempt cut short leaves a short span before the one that grows.
      const spans = ((await res.json()) as { spans: { from: string; to: string }[] }).spans;
      return spans.find((s) => Date.parse(s.to) - Date.parse(s.from) >= 6000) ?? null;
    },
    90_000,
    1000,
  );
  t.truthy(recorded);

  const page = await fetch(`${http}/`);
  t.is(page.status, 200);
  t.regex(await page.text(), /<html/i);
  const script = await fetch(`${http}/ui/app.js`);
  t.is(script.status, 200);
  t.true((await script.text()).length > 0);

  const s3 = s3Client(t, `http://127.0.0.1:${s3Port}`);
  await s3.send(new CreateBucketCommand({ Bucket: 'built' }));
  const body = randomBytes(3 * 1024 * 1024 + 17);
  const put = await s3.send(new PutObjectCommand({ Bucket: 'built', Key: 'k', Body: body }));
  t.is(put.ETag, `"${createHash('md5').update(body).digest('hex')}"`, 'hashed by the built worker');
  const got = await s3.send(new GetObjectCommand({ Bucket: 'built', Key: 'k' }));
  t.true(Buffer.from(await got.Body!.transformToByteArray()).equals(body));

  // Its children now: the embedded nats-server and the demo's camera server (the camera
  // itself is read by our own RTSP client, no ffmpeg). None may outlive it.
  const { stdout } = await run('ps', ['-o', 'pid=,args=', '--ppid', String(rec.child.pid)]);
  const children = stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => ({ pid: Number(l.trim().split(/\s+/)[0]), args: l.trim() }));
  t.true(children.some((c) => c.args.includes('nats-server')) && children.some((c) => c.args.includes('camera.py')), stdout);
  rec.child.kill('SIGTERM');
  t.is(await rec.exited, 0);
  // A zombie (exited, not yet reaped by whoever inherited it) counts as gone.
  const alive = (pid: number): boolean => {
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  await waitFor('children gone', () => (children.some((c) => alive(c.pid)) ? null : true), 10_000, 250).catch(() => undefined);
  t.deepEqual(
    children.filter((c) => alive(c.pid)).map((c) => c.args),
    [],
  );
  t.deepEqual(await processesMentioning(dataDir), [], 'no nats-server left on the data dir');
});
