/**
 * The native ingest's failures (ingest/native-ingest.ts), against a fake RTSP camera
 * that says what each case needs: every one ends the attempt with its typed error
 * (what the camera's status and lastError show), and stopping a session tells the
 * camera (TEARDOWN), stopping it while it starts closes its connection at once. A GOP
 * longer than the no-video timeout is progress (its frames), a camera without keyframes
 * is not. Recording itself is the camera matrix's (camera-matrix-native.test.ts),
 * through a real RTSP server.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, type Socket } from 'node:net';
import { NativeIngestError, nativeClientFault, startNativeIngest } from '../../ingest/native-ingest.ts';
import { RtspAuthError } from '../../rtsp/rtsp-auth.ts';
import { nativeFits, resetNativeFallback, startCameraIngest } from '../../ingest/camera-ingest.ts';
import type { IngestPlan } from '../../ffmpeg/ffmpeg-ingest.ts';
import { parseSdpMedia } from '../../rtsp/rtsp-describe.ts';

const H264 =
  'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA==\r\na=control:track1\r\n';

interface FakeCamera {
  url: string;
  methods: string[];
  /** Client connections the camera saw closed. */
  closed: number;
}

interface CameraHooks {
  /** Requests of this method go unanswered. */
  silent?: string;
  /** Called once PLAY is answered (to send media). */
  onPlay?: (s: Socket) => void;
}

/** Answers every request 200 (DESCRIBE with `sdp`), or `status` to `refuse`; sends no media unless `hooks.onPlay` does. */
async function fakeCamera(t: ExecutionContext, sdp: string, refuse?: { method: string; status: string }, hooks: CameraHooks = {}): Promise<FakeCamera> {
  const methods: string[] = [];
  const sockets = new Set<Socket>();
  let closed = 0;
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => closed++);
    let buf = '';
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const req = buf.slice(0, end);
        buf = buf.slice(end + 4);
        if (!/^[A-Z_]+ /.test(req)) continue; // interleaved receiver reports
        const method = req.split(' ')[0] ?? '';
        const cseq = /^CSeq: (.*)$/im.exec(req)?.[1] ?? '0';
        methods.push(method);
        if (method === hooks.silent) continue;
        if (refuse && method === refuse.method) s.write(`RTSP/1.0 ${refuse.status}\r\nCSeq: ${cseq}\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n`);
        else if (method === 'DESCRIBE')
          s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nContent-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`);
        else if (method === 'SETUP')
          s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 7;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n`);
        else s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 7\r\n\r\n`);
        if (method === 'PLAY') hooks.onPlay?.(s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return {
    url: `rtsp://user:secret@127.0.0.1:${(server.address() as { port: number }).port}/live`,
    methods,
    get closed() {
      return closed;
    },
  };
}

/** Waits for `cond`, checking every 10 ms; fails the test with `what` if it is not met within `ms`. */
async function until(t: ExecutionContext, what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return void t.fail(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Sends H.264 frames interleaved on channel 0, one single-NAL packet each, 25 a second:
 * an IDR first when `keyframe`, then P slices only (a GOP that does not end). Stops when
 * the socket does.
 */
function sendFrames(s: Socket, keyframe: boolean): void {
  let n = 0;
  const timer = setInterval(() => {
    if (s.destroyed) return clearInterval(timer);
    const nal = Buffer.alloc(200, 0x5a);
    nal[0] = n === 0 && keyframe ? 0x65 : 0x41; // IDR slice, else non-IDR slice
    const rtp = Buffer.alloc(12);
    rtp[0] = 0x80;
    rtp[1] = 0x80 | 96; // marker: the frame's last packet
    rtp.writeUInt16BE(n & 0xffff, 2);
    rtp.writeUInt32BE((n * 3600) >>> 0, 4);
    rtp.writeUInt32BE(0xc0ffee, 8);
    const head = Buffer.from([0x24, 0, 0, 0]);
    head.writeUInt16BE(rtp.length + nal.length, 2);
    s.write(Buffer.concat([head, rtp, nal]));
    n++;
  }, 40);
}

/** Sends `count` H.264 frames interleaved on channel 0 as fast as `everyMs` allows, a keyframe every `gop`, then nothing (the socket stays open). */
function sendGops(s: Socket, count: number, gop: number, everyMs = 5): void {
  let n = 0;
  const timer = setInterval(() => {
    if (s.destroyed || n >= count) return clearInterval(timer);
    const nal = Buffer.alloc(200, 0x5a);
    nal[0] = n % gop === 0 ? 0x65 : 0x41;
    const rtp = Buffer.alloc(12);
    rtp[0] = 0x80;
    rtp[1] = 0x80 | 96;
    rtp.writeUInt16BE(n & 0xffff, 2);
    rtp.writeUInt32BE((n * 3600) >>> 0, 4);
    rtp.writeUInt32BE(0xc0ffee, 8);
    const head = Buffer.from([0x24, 0, 0, 0]);
    head.writeUInt16BE(rtp.length + nal.length, 2);
    s.write(Buffer.concat([head, rtp, nal]));
    n++;
  }, everyMs);
}

async function failure(url: string, stallTimeoutMs = 1500, noVideoMs?: number): Promise<Error | undefined> {
  const s = startNativeIngest({ url, stallTimeoutMs, ...(noVideoMs !== undefined ? { noVideoMs } : {}) });
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

for (const how of ['stop()', "the owner's signal"] as const) {
  test(`${how} while the session starts (${how === 'stop()' ? 'DESCRIBE' : 'SETUP'} unanswered) closes the camera connection at once, not at the RTSP timeout`, async (t) => {
    t.timeout(15_000);
    const method = how === 'stop()' ? 'DESCRIBE' : 'SETUP';
    const cam = await fakeCamera(t, H264, undefined, { silent: method });
    const ac = new AbortController();
    const s = startNativeIngest({ url: cam.url, stallTimeoutMs: 60_000, signal: ac.signal });
    await until(t, `${method} asked`, () => cam.methods.includes(method));
    if (how === 'stop()') s.stop();
    else ac.abort();
    t.deepEqual(await s.exited, { requested: true });
    await until(t, 'the camera sees the connection closed', () => cam.closed === 1);
  });
}

test('a GOP longer than the no-video timeout is not NATIVE_NO_VIDEO: its frames are progress; frames without a keyframe are not', async (t) => {
  t.timeout(30_000);
  const noVideoMs = 1000;
  const long = await fakeCamera(t, H264, undefined, { onPlay: (sock) => sendFrames(sock, true) });
  const s = startNativeIngest({ url: long.url, stallTimeoutMs: 5000, noVideoMs });
  let exit: Awaited<typeof s.exited> | null = null;
  void s.exited.then((e) => (exit = e));
  // 3 × noVideoMs of one GOP (25 frames a second), the watchdog looking every second.
  await until(t, '75 frames taken or an early exit', () => (s.stats().media?.units ?? 0) >= 75 || exit !== null);
  t.is(exit, null, `ended early: ${String((exit as { error?: Error } | null)?.error)}`);
  t.is(s.stats().media?.gops, 0, 'one GOP, still open');
  s.stop();
  t.deepEqual(await s.exited, { requested: true });

  const none = await fakeCamera(t, H264, undefined, { onPlay: (sock) => sendFrames(sock, false) });
  const started = Date.now();
  const err = await failure(none.url, 5000, noVideoMs);
  t.true(err instanceof NativeIngestError && err.code === 'NATIVE_NO_VIDEO', String(err));
  t.true(Date.now() - started < 5000, 'before the stall timeout');
});

test("which failures are our client's (ffmpeg reads the camera next): a 4xx refusal of what we asked, not a busy camera's 5xx, 453 or 454", (t) => {
  const rtsp = (status: number): NativeIngestError => new NativeIngestError('RTSP_RTSP', `PLAY: ${status}`, status);
  for (const status of [400, 404, 405, 451, 455, 459]) t.true(nativeClientFault(rtsp(status)), String(status));
  for (const status of [401, 408, 453, 454, 500, 503, 551]) t.false(nativeClientFault(rtsp(status)), String(status));
  t.true(nativeClientFault(new NativeIngestError('RTSP_TRANSPORT', 'SETUP: 461', 461)));
  t.true(nativeClientFault(new NativeIngestError('NATIVE_BAD_CONFIG', 'sps')));
  t.false(nativeClientFault(new NativeIngestError('RTSP_CONNECT', 'closed')));
  t.false(nativeClientFault(new NativeIngestError('NATIVE_STALLED', 'silent')));
  t.false(nativeClientFault(new RtspAuthError('refused')));
  t.false(nativeClientFault(undefined));
});

test('a camera that goes silent after 3 GOPs (NATIVE_STALLED), or a session stopped then: every GOP it sent is recorded, the last one too', async (t) => {
  t.timeout(30_000);
  const gops = 3;
  const gop = 10;
  const record = async (stop: boolean): Promise<{ frames: number; fragments: number; exit: Awaited<ReturnType<typeof startNativeIngest>['exited']> }> => {
    const cam = await fakeCamera(t, H264, undefined, { onPlay: (sock) => sendGops(sock, gops * gop, gop) });
    const s = startNativeIngest({ url: cam.url, stallTimeoutMs: 1500 });
    if (stop) void until(t, 'every frame taken', () => (s.stats().media?.units ?? 0) >= gops * gop - 1).then(() => s.stop());
    let frames = 0;
    let fragments = 0;
    for await (const c of s.chunks) {
      if (c.kind !== 'fragment') continue;
      fragments++;
      frames += c.moof.tracks.find((x) => x.trackId === 1)?.sampleCount ?? 0;
    }
    return { frames, fragments, exit: await s.exited };
  };
  const stalled = await record(false);
  t.true(stalled.exit.error instanceof NativeIngestError && stalled.exit.error.code === 'NATIVE_STALLED', String(stalled.exit.error));
  t.is(stalled.frames, gops * gop, 'every frame sent');
  t.is(stalled.fragments, gops, 'one fragment per GOP');
  const stopped = await record(true);
  t.deepEqual(stopped.exit, { requested: true });
  t.is(stopped.frames, gops * gop);
  t.is(stopped.fragments, gops);
});
