/**
 * The native ingest's failures (ingest/native-ingest.ts), against a fake RTSP camera
 * that says what each case needs: every one ends the attempt with its typed error
 * (what the camera's status and lastError show), and stopping a session tells the
 * camera (TEARDOWN). Recording itself is the camera matrix's
 * (camera-matrix-native.test.ts), through a real RTSP server.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, type Socket } from 'node:net';
import { NativeIngestError, startNativeIngest } from '../../ingest/native-ingest.ts';
import { RtspAuthError } from '../../rtsp/rtsp-auth.ts';
import { nativeFits, resetNativeFallback, startCameraIngest } from '../../ingest/camera-ingest.ts';
import type { IngestPlan } from '../../ffmpeg/ffmpeg-ingest.ts';
import { parseSdpMedia } from '../../rtsp/rtsp-describe.ts';

const H264 =
  'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA==\r\na=control:track1\r\n';

interface FakeCamera {
  url: string;
  methods: string[];
}

/** Answers every request 200 (DESCRIBE with `sdp`), or `status` to `refuse`; sends no media. */
async function fakeCamera(t: ExecutionContext, sdp: string, refuse?: { method: string; status: string }): Promise<FakeCamera> {
  const methods: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    let buf = '';
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const req = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const method = req.split(' ')[0] ?? '';
        const cseq = /^CSeq: (.*)$/im.exec(req)?.[1] ?? '0';
        methods.push(method);
        if (refuse && method === refuse.method) s.write(`RTSP/1.0 ${refuse.status}\r\nCSeq: ${cseq}\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n`);
        else if (method === 'DESCRIBE')
          s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nContent-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`);
        else if (method === 'SETUP')
          s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 7;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n`);
        else s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 7\r\n\r\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { url: `rtsp://user:secret@127.0.0.1:${(server.address() as { port: number }).port}/live`, methods };
}

async function failure(url: string, stallTimeoutMs = 1500): Promise<Error | undefined> {
  const s = startNativeIngest({ url, stallTimeoutMs });
  for await (const _ of s.chunks) {
    /* none expected */
  }
  const exit = await s.exited;
  return exit.error;
}

test('a camera that answers PLAY and then sends nothing: NATIVE_STALLED after the stall timeout', async (t) => {
  const cam = await fakeCamera(t, H264);
  const err = await failure(cam.url);
  t.true(err instanceof NativeIngestError && err.code === 'NATIVE_STALLED', String(err));
  t.deepEqual(cam.methods.slice(0, 3), ['DESCRIBE', 'SETUP', 'PLAY']);
});

test('no H.264/H.265 video in the SDP: RTSP_NO_STREAM naming what there is', async (t) => {
  const cam = await fakeCamera(t, 'v=0\r\nm=video 0 RTP/AVP 26\r\na=control:track1\r\n');
  const err = await failure(cam.url);
  t.true(err instanceof NativeIngestError && err.code === 'RTSP_NO_STREAM', String(err));
  t.regex(err!.message, /video JPEG/);
});

test('parameter sets in the SDP that are not base64: NATIVE_BAD_CONFIG, nothing set up', async (t) => {
  const cam = await fakeCamera(t, H264.replace('Z0IAHpWoKA9puAgICBA=', 'not*base64'));
  const err = await failure(cam.url);
  t.true(err instanceof NativeIngestError && err.code === 'NATIVE_BAD_CONFIG', String(err));
  t.false(cam.methods.includes('SETUP'));
});

test('a refused login: the RtspAuthError of every path, no password in it; a refused PLAY: RTSP_RTSP with its status', async (t) => {
  const login = await fakeCamera(t, H264, { method: 'DESCRIBE', status: '401 Unauthorized' });
  const auth = await failure(login.url);
  t.true(auth instanceof RtspAuthError, String(auth));
  t.false(auth!.message.includes('secret'));
  const play = await fakeCamera(t, H264, { method: 'PLAY', status: '454 Session Not Found' });
  const refused = await failure(play.url);
  t.true(refused instanceof NativeIngestError && refused.code === 'RTSP_RTSP' && refused.status === 454, String(refused));
});

test('nobody there: RTSP_CONNECT; stop() on a playing session sends TEARDOWN and exits as requested', async (t) => {
  const nobody = await failure('rtsp://127.0.0.1:1/live');
  t.true(nobody instanceof NativeIngestError && nobody.code === 'RTSP_CONNECT', String(nobody));
  const cam = await fakeCamera(t, H264);
  const s = startNativeIngest({ url: cam.url, stallTimeoutMs: 60_000 });
  while (s.stats().transport === null) await new Promise((r) => setTimeout(r, 20)); // PLAY answered
  s.stop();
  t.deepEqual(await s.exited, { requested: true });
  while (!cam.methods.includes('TEARDOWN')) await new Promise((r) => setTimeout(r, 20));
  t.pass();
});

test('which cameras the native client takes: H.264/H.265 with AAC or no audio, no data track, not over HTTP', (t) => {
  const sdp = (...m: string[]): ReturnType<typeof parseSdpMedia> => parseSdpMedia(`v=0\r\n${m.join('')}`);
  const v264 = 'm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n';
  const v265 = 'm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n';
  const aac = 'm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\n';
  t.true(nativeFits(sdp(v264), 'auto'));
  t.true(nativeFits(sdp(v265, aac), 'udp'));
  t.false(nativeFits(sdp(v264, 'm=audio 0 RTP/AVP 8\r\n'), 'auto'), 'G.711: made AAC by ffmpeg');
  t.false(nativeFits(sdp(v264, 'm=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n'), 'auto'), 'a data track');
  t.false(nativeFits(sdp('m=video 0 RTP/AVP 26\r\n'), 'auto'), 'Motion JPEG');
  t.false(nativeFits(sdp(v264), 'http'));
});

test('a camera the native client fails on before any video (here: parameter sets it cannot read) is read by ffmpeg from its next attempt', async (t) => {
  resetNativeFallback();
  t.teardown(resetNativeFallback);
  const cam = await fakeCamera(t, H264.replace('Z0IAHpWoKA9puAgICBA=', 'not*base64'));
  const attempt = async (): Promise<{ plans: IngestPlan[]; error: Error | undefined }> => {
    const plans: IngestPlan[] = [];
    const s = startCameraIngest({ url: cam.url, ffmpegPath: 'ffmpeg', stallTimeoutMs: 2000, ingest: 'native', onPlan: (p) => plans.push(p) });
    // ffmpeg's attempt would wait on a camera that sends nothing: stopped once it has its plan.
    const planned = setInterval(() => plans.length > 0 && s.stop(), 20);
    for await (const _ of s.chunks) {
      /* none expected */
    }
    clearInterval(planned);
    return { plans, error: (await s.exited).error };
  };
  const first = await attempt();
  t.true(first.error instanceof NativeIngestError && first.error.code === 'NATIVE_BAD_CONFIG', String(first.error));
  const second = await attempt();
  t.is(second.plans[0]?.ingest, 'ffmpeg', JSON.stringify(second.plans));
});
