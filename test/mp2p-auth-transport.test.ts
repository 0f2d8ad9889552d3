/**
 * MP2P cameras behind a login and on UDP (issue 12, "common cameras record nothing"),
 * end to end: sim/mp2p.py with `--auth digest` / `--auth basic` (GStreamer's RTSP
 * server asking every request for it), our RTSP bridge + PS reader (no ffmpeg in
 * ingest), a recorder node over NATS and HTTP, LMDB.
 * - Digest (as Hikvision cameras ask) and Basic: the camera records, search finds a
 *   span, the download decodes; the password has characters that must be
 *   percent-encoded in the URL.
 * - A wrong password: the attempt ends with the typed refusal (RTSP_AUTH / MP2P_AUTH)
 *   in the camera's status, the camera backs off, and neither password appears in
 *   the status or anywhere in the recorder's log.
 * - A UDP-only MP2P mount (TCP SETUP answered 461) with transport `auto`: the bridge
 *   falls back to UDP, records, and the status says `transportInUse: "udp"`.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SimMp2pCamera, type Mp2pMount } from '../sim/mp2p-camera.ts';
import { decodeErrors } from './helpers/media.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);
const USER = 'admin';
/** `@`, `:`, `%` and `/` must be percent-encoded in the URL's user info. */
const PASSWORD = 'Hik@Pa:ss%w/rd-77';
const WRONG = 'Not-The-Pass-99';
const SPAN_MS = 8000;

interface CameraView {
  status: string;
  lastError: string | null;
  transport: string;
  transportInUse: string | null;
}

async function camera(n: TestNode, id: string): Promise<CameraView> {
  return (await getJson<{ camera: CameraView }>(`${n.http}/api/cameras/${id}`)).body.camera;
}

/** Waits until search finds a span of `id` of at least `ms` since `sinceMs`; says the camera's state if none comes. */
async function waitSpan(n: TestNode, id: string, sinceMs: number, ms: number): Promise<{ fromMs: number; toMs: number }> {
  try {
    return await waitFor(
      `${ms} ms of ${id}`,
      async () => {
        const q = new URLSearchParams({ camera: id, from: new Date(sinceMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
        const { body } = await getJson<{ spans: { from: string; to: string }[] }>(`${n.http}/api/recordings?${q.toString()}`);
        return body.spans.map((s) => ({ fromMs: Date.parse(s.from), toMs: Date.parse(s.to) })).find((s) => s.toMs - s.fromMs >= ms) ?? null;
      },
      120_000,
      1000,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; camera ${JSON.stringify(await camera(n, id))}`);
  }
}

/** Records, and the download of its first seconds decodes with the video and AAC. */
async function recordsAndDecodes(n: TestNode, dir: string, id: string, sinceMs: number): Promise<{ cam: CameraView; problems: string[] }> {
  const span = await waitSpan(n, id, sinceMs, SPAN_MS);
  const problems: string[] = [];
  const file = join(dir, `${id}.mp4`);
  const res = await fetch(`${n.http}/api/cameras/${id}/video.mp4?from=${span.fromMs + 1000}&to=${span.fromMs + SPAN_MS - 1000}`);
  if (res.status !== 200) problems.push(`${id}: video.mp4 ${res.status} ${await res.text()}`);
  else {
    await writeFile(file, Buffer.from(await res.arrayBuffer()));
    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', file]);
    const codecs = stdout.split('\n').filter(Boolean);
    if (codecs.join(',') !== 'h264,aac') problems.push(`${id}: video.mp4 tracks ${codecs.join(',')}`);
    const errors = await decodeErrors(file);
    if (errors !== '') problems.push(`${id}: video.mp4 decode errors: ${errors}`);
  }
  return { cam: await camera(n, id), problems };
}

function put(n: TestNode, id: string, url: string, transport = 'auto'): Promise<{ ok: boolean }> {
  return n.request('rec.v1.camera.put', { id, streams: { main: url }, transport });
}

test('MP2P with a login: Digest and Basic record and download; a wrong password is refused typed, backs off, never logged; UDP-only records over UDP with auto', async (t) => {
  t.timeout(300_000);
  const auth = { user: USER, password: PASSWORD };
  const digest = await SimMp2pCamera.start({ auth: { scheme: 'digest', ...auth } });
  t.teardown(() => digest.stop());
  const basic = await SimMp2pCamera.start({ auth: { scheme: 'basic', ...auth } });
  t.teardown(() => basic.stop());
  const logLines: string[] = [];
  const n = await startNode(t, {}, undefined, { logLines });
  const dir = await tempDir(t);
  const sinceMs = Date.now() - 5000;

  const mount: Mp2pMount = 'h264aac';
  t.true(digest.url(mount).includes(encodeURIComponent(PASSWORD)), 'the password is percent-encoded in the URL');
  for (const [id, url] of [
    ['digest', digest.url(mount)],
    ['basic', basic.url(mount)],
    ['udponly', digest.url('h264aac-udp')],
    ['wrong', digest.url(mount, { user: USER, password: WRONG })],
  ] as const) {
    const r = await put(n, id, url);
    t.true(r.ok, `${id}: ${JSON.stringify(r)}`);
  }

  // A wrong password: the typed refusal in the status (no password), and the camera backs off.
  const refused = await waitFor(
    'the wrong password refused in the status',
    async () => {
      const c = await camera(n, 'wrong');
      return c.lastError && /(RTSP|MP2P)_AUTH/.test(c.lastError) ? c : null;
    },
    60_000,
    500,
  );
  t.regex(refused.lastError!, /refused the login of user "admin" \(Digest\)/, refused.lastError!);
  t.not(refused.status, 'recording');

  const results = await Promise.all(['digest', 'basic', 'udponly'].map((id) => recordsAndDecodes(n, dir, id, sinceMs)));
  t.deepEqual(
    results.flatMap((r) => r.problems),
    [],
  );
  const [d, b, u] = results.map((r) => r.cam);
  t.is(d!.status, 'recording', JSON.stringify(d));
  t.is(d!.transportInUse, 'tcp', 'Digest camera: TCP interleaved, as auto asks first');
  t.is(b!.status, 'recording', JSON.stringify(b));
  t.is(u!.status, 'recording', JSON.stringify(u));
  t.is(u!.transport, 'auto');
  t.is(u!.transportInUse, 'udp', 'the UDP-only camera refused TCP (461): auto fell back to UDP');

  // Still refused, still no video: never a span for the wrong camera.
  const wrong = await camera(n, 'wrong');
  t.not(wrong.status, 'recording', JSON.stringify(wrong));
  const q = new URLSearchParams({ camera: 'wrong', from: new Date(sinceMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
  t.deepEqual((await getJson<{ spans: unknown[] }>(`${n.http}/api/recordings?${q.toString()}`)).body.spans, []);

  // Neither password, raw or percent-encoded, in any camera's error or any log line (the
  // camera's URL is shown whole to admins only: test/credentials.test.ts).
  const secrets = [PASSWORD, encodeURIComponent(PASSWORD), WRONG];
  const texts = [...[wrong, d, b, u].map((c) => JSON.stringify({ status: c!.status, lastError: c!.lastError })), ...logLines];
  const leaks = texts.filter((text) => secrets.some((s) => text.includes(s)));
  t.deepEqual(leaks, [], 'no password in errors or the log');
  t.true(
    logLines.some((l) => /(RTSP|MP2P)_AUTH/.test(l)),
    'the refusal is in the log',
  );
});
