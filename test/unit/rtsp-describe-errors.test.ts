/**
 * describeRtsp / describeWithRetry (rtsp/rtsp-describe.ts) against a fake camera: what
 * its callers (ingest/camera-ingest.ts, ffmpeg/ffmpeg-ingest.ts) tell apart. A refused
 * login is an RtspAuthError whose message names user and host, never the password, and
 * is not retried; a 4xx is not retried either, a 5xx is; everything else is a plain
 * Error (less is known, ffmpeg reports the real problem).
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, type Socket } from 'node:net';
import { describeRtsp, describeWithRetry } from '../../rtsp/rtsp-describe.ts';
import { RtspAuthError } from '../../rtsp/rtsp-auth.ts';

const SDP = 'v=0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 0 RTP/AVP 8\r\n';
const BASIC = `Basic ${Buffer.from('user:s3cret').toString('base64')}`;

interface Camera {
  port: number;
  /** Request heads received, in order. */
  requests: string[];
  /** Connections accepted. */
  connections: number;
}

type Answer = { status: string; headers?: string[]; body?: string } | null;

/** A camera answering each DESCRIBE with `answer(head)`: the status line and headers (CSeq added), or null for silence. */
async function fakeCamera(t: ExecutionContext, answer: (head: string) => Answer): Promise<Camera> {
  const cam: Camera = { port: 0, requests: [], connections: 0 };
  const server = createServer((s) => {
    cam.connections++;
    t.teardown(() => s.destroy());
    s.on('error', () => undefined);
    let rest = '';
    s.on('data', (d: Buffer) => {
      const heads = (rest + d.toString('latin1')).split('\r\n\r\n');
      rest = heads.pop() ?? '';
      for (const head of heads) {
        cam.requests.push(head);
        reply(s, head, answer(head));
      }
    });
  });
  t.teardown(() => server.close());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cam.port = (server.address() as { port: number }).port;
  return cam;
}

function reply(s: Socket, head: string, a: Answer): void {
  if (!a) return;
  const cseq = /^CSeq: (.*)$/im.exec(head)?.[1] ?? '0';
  const body = a.body ?? '';
  s.write([`RTSP/1.0 ${a.status}`, `CSeq: ${cseq}`, ...(a.headers ?? []), `Content-Length: ${body.length}`, '', body].join('\r\n'));
}

const authHeader = (head: string): string | null => /^Authorization: (.*)$/im.exec(head)?.[1] ?? null;

test('a Basic login: the second DESCRIBE carries it, the request line no credentials; the answer is the media', async (t) => {
  const cam = await fakeCamera(t, (head) =>
    authHeader(head) === BASIC
      ? { status: '200 OK', headers: ['Content-Type: application/sdp'], body: SDP }
      : { status: '401 Unauthorized', headers: ['WWW-Authenticate: Basic realm="cam"'] },
  );
  const media = await describeRtsp(`rtsp://user:s3cret@127.0.0.1:${cam.port}/live`, 2000);
  t.deepEqual(media, [
    { media: 'video', encodings: ['H264'], clockRate: 90000 },
    { media: 'audio', encodings: ['PCMA'], clockRate: 8000, channels: 1 },
  ]);
  t.is(cam.requests.length, 2);
  for (const head of cam.requests) {
    t.true(head.startsWith(`DESCRIBE rtsp://127.0.0.1:${cam.port}/live RTSP/1.0\r\n`), head);
    t.regex(head, /^Accept: application\/sdp$/im);
  }
});

test('a refused login is an RtspAuthError naming user, host and scheme, no password; not retried', async (t) => {
  const cam = await fakeCamera(t, () => ({ status: '401 Unauthorized', headers: ['WWW-Authenticate: Digest realm="cam", nonce="abc", qop="auth"'] }));
  const err = await t.throwsAsync(describeWithRetry(`rtsp://user:s3cret@127.0.0.1:${cam.port}/live`, 2000, 3, 10));
  t.true(err instanceof RtspAuthError, String(err));
  t.is((err as RtspAuthError).code, 'RTSP_AUTH');
  t.is(err.message, `RTSP_AUTH: camera 127.0.0.1:${cam.port} refused the login of user "user" (Digest) to DESCRIBE: wrong user or password`);
  t.is(cam.connections, 1);
  t.regex(
    authHeader(cam.requests[1]!) ?? '',
    /^Digest username="user", realm="cam", nonce="abc", uri="rtsp:\/\/127\.0\.0\.1:\d+\/live", response="[0-9a-f]{32}", qop=auth, nc=00000001/,
  );
});

test('a login the URL lacks, or a scheme we do not speak: an RtspAuthError saying so, without asking again', async (t) => {
  const cam = await fakeCamera(t, () => ({ status: '401 Unauthorized', headers: ['WWW-Authenticate: Negotiate abc'] }));
  const none = await t.throwsAsync(describeRtsp(`rtsp://127.0.0.1:${cam.port}/live`, 2000));
  t.true(none instanceof RtspAuthError, String(none));
  t.is(none.message, `RTSP_AUTH: camera 127.0.0.1:${cam.port} asks for a login to DESCRIBE and the camera's URL has no user and password`);
  const scheme = await t.throwsAsync(describeRtsp(`rtsp://user:s3cret@127.0.0.1:${cam.port}/live`, 2000));
  t.true(scheme instanceof RtspAuthError, String(scheme));
  t.is(scheme.message, `RTSP_AUTH: camera 127.0.0.1:${cam.port} asks for a login scheme we do not speak (Negotiate; Basic and Digest MD5 are)`);
  t.is(cam.requests.length, 2, 'one DESCRIBE each');
});

test('a 4xx is a plain Error "DESCRIBE answered 4xx", not retried; a 5xx is retried', async (t) => {
  const missing = await fakeCamera(t, () => ({ status: '404 Not Found' }));
  const notFound = await t.throwsAsync(describeWithRetry(`rtsp://127.0.0.1:${missing.port}/live`, 2000, 3, 10));
  t.false(notFound instanceof RtspAuthError);
  t.is(notFound.message, 'DESCRIBE answered 404');
  t.is(missing.connections, 1);
  const busy = await fakeCamera(t, () => ({ status: '503 Service Unavailable' }));
  const unavailable = await t.throwsAsync(describeWithRetry(`rtsp://127.0.0.1:${busy.port}/live`, 2000, 3, 10));
  t.is(unavailable.message, 'DESCRIBE answered 503');
  t.is(busy.connections, 3);
});

test('no answer, nobody there, not rtsp://: plain Errors', async (t) => {
  const silent = await fakeCamera(t, () => null);
  const timeout = await t.throwsAsync(describeRtsp(`rtsp://127.0.0.1:${silent.port}/live`, 300));
  t.is(timeout.message, 'no DESCRIBE answer within 300 ms');
  const nobody = await t.throwsAsync(describeRtsp('rtsp://127.0.0.1:1/live', 2000));
  t.false(nobody instanceof RtspAuthError);
  t.regex(nobody.message, /ECONNREFUSED/);
  const http = await t.throwsAsync(describeRtsp('http://127.0.0.1/live', 2000));
  t.is(http.message, 'DESCRIBE needs rtsp://, got http:');
});
