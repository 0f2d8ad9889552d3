/**
 * Our RTSP client's session (rtsp/rtp-session.ts) against a fake camera on a real local
 * socket that answers as each case needs: a camera that hangs up mid-start fails the
 * start at once (not at the timeout), typed, over TCP and UDP; the owner's abort ends a
 * start at once with every socket closed; a failure read with PLAY's answer starts
 * nothing; PLAY, keep-alives and TEARDOWN go to the aggregate control URL; over UDP,
 * RTP from the SETUP answer's `source=` is taken and the camera's ports get a packet
 * from us after SETUP (NAT).
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { startRtpSession, aggregateControl, sdpBase, udpAnswer, type RtpSessionOptions } from '../../rtsp/rtp-session.ts';
import { RtspAbortError, type MakeRtspError, type RtspFailureKind } from '../../rtsp/rtsp-connection.ts';
import { parseSdpTracks } from '../../rtsp/sdp-tracks.ts';

class TestRtspError extends Error {
  constructor(
    readonly kind: RtspFailureKind,
    message: string,
    readonly status: number | null,
  ) {
    super(`${kind}: ${message}`);
  }
}
const fail: MakeRtspError = (kind, message, status) => new TestRtspError(kind, message, status);

const SDP = 'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n';

interface Request {
  method: string;
  url: string;
  cseq: string;
  transport: string;
}

/** What the camera does with one request: `reply` answers it; nothing, and it goes unanswered. */
type Script = (req: Request, reply: (status: string, headers?: Record<string, string>, body?: string) => void, s: Socket) => void;

interface Camera {
  url: string;
  /** `rtsp://127.0.0.1:port` (no credentials, no path). */
  origin: string;
  requests: Request[];
  connections: number;
  /** Client connections the camera saw closed. */
  closed: number;
}

async function camera(t: ExecutionContext, script: Script): Promise<Camera> {
  const sockets = new Set<Socket>();
  const cam: Camera = { url: '', origin: '', requests: [], connections: 0, closed: 0 };
  const server = createServer((s) => {
    sockets.add(s);
    cam.connections++;
    s.on('close', () => cam.closed++);
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        if (!/^[A-Z_]+ /.test(head)) continue; // an interleaved receiver report, say
        const [method = '', url = ''] = head.split(' ');
        const req = { method, url, cseq: /^CSeq: (.*)$/im.exec(head)?.[1] ?? '0', transport: /^Transport: (.*)$/im.exec(head)?.[1] ?? '' };
        cam.requests.push(req);
        script(
          req,
          (status, headers = {}, body = '') =>
            s.write(
              `RTSP/1.0 ${status}\r\nCSeq: ${req.cseq}\r\n${Object.entries({ ...headers, ...(body ? { 'Content-Length': String(body.length) } : {}) })
                .map(([k, v]) => `${k}: ${v}\r\n`)
                .join('')}\r\n${body}`,
            ),
          s,
        );
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  cam.origin = `rtsp://127.0.0.1:${(server.address() as { port: number }).port}`;
  cam.url = `${cam.origin.replace('rtsp://', 'rtsp://user:secret@')}/live`;
  return cam;
}

/** A camera that answers every request (DESCRIBE with `sdp`, SETUP over TCP). */
const answering =
  (sdp = SDP, describeHeaders: Record<string, string> = {}): Script =>
  (req, reply) => {
    if (req.method === 'DESCRIBE') reply('200 OK', { 'Content-Type': 'application/sdp', ...describeHeaders }, sdp);
    else if (req.method === 'SETUP') reply('200 OK', { Session: '7;timeout=60', Transport: 'RTP/AVP/TCP;unicast;interleaved=0-1' });
    else reply('200 OK', { Session: '7' });
  };

const choose = (sdp: string, base: string): { control: string }[] => parseSdpTracks(sdp, base).map((tr) => ({ control: tr.control }));

const start = (url: string, opts: Partial<RtpSessionOptions> = {}, onPacket: (payload: Buffer, gap: boolean) => void = () => undefined) =>
  startRtpSession(url, 60_000, choose, { onPacket: (_track, p, gap) => onPacket(Buffer.from(p.payload), gap) }, { fail, ...opts });

/** Waits for `cond`, checking every 10 ms; fails the test with `what` if it is not met within `ms`. */
async function until(t: ExecutionContext, what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return void t.fail(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Timers that keep the process up (our request timeouts are such); counted in serial tests only, others' would count too. */
const refTimers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/** Whether a local UDP port is free again (the session closed its socket). */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, () => s.close(() => resolve(true)));
  });
}

const clientPort = (transport: string): number => Number(/client_port=(\d+)/.exec(transport)?.[1]);

for (const method of ['DESCRIBE', 'SETUP', 'PLAY']) {
  test(`the camera closing the connection at ${method} fails the start at once: CONNECT, not the ${60}s TIMEOUT`, async (t) => {
    t.timeout(10_000);
    const cam = await camera(t, (req, reply, s) => (req.method === method ? s.end() : answering()(req, reply, s)));
    const err = await t.throwsAsync(start(cam.url, { transport: 'tcp' }));
    t.true(err instanceof TestRtspError && err.kind === 'CONNECT', String(err));
    t.regex(err.message, /closed the RTSP connection/);
  });
}

test('a connection reset during SETUP fails the start at once, CONNECT with the reason', async (t) => {
  t.timeout(10_000);
  const cam = await camera(t, (req, reply, s) => (req.method === 'SETUP' ? s.resetAndDestroy() : answering()(req, reply, s)));
  const err = await t.throwsAsync(start(cam.url, { transport: 'tcp' }));
  t.true(err instanceof TestRtspError && err.kind === 'CONNECT', String(err));
  t.regex(err.message, /ECONNRESET|closed the RTSP connection/);
});

test('UDP: the camera hanging up at SETUP gives the typed error (the RTP pair closed once, not twice), and frees the ports', async (t) => {
  t.timeout(10_000);
  const cam = await camera(t, (req, reply, s) => (req.method === 'SETUP' ? s.destroy() : answering()(req, reply, s)));
  const err = await t.throwsAsync(start(cam.url, { transport: 'udp' }));
  t.true(err instanceof TestRtspError && err.kind === 'CONNECT', `${String(err)} ${(err as { code?: string }).code ?? ''}`);
  const port = clientPort(cam.requests.find((r) => r.method === 'SETUP')!.transport);
  t.true(await portFree(port));
  t.true(await portFree(port + 1));
});

test.serial(
  'an abort before the start connects nothing; an abort while DESCRIBE waits ends it at once: RtspAbortError, socket closed, no timer left',
  async (t) => {
    t.timeout(10_000);
    const cam = await camera(t, () => undefined); // never answers
    const before = new AbortController();
    before.abort();
    t.true((await t.throwsAsync(start(cam.url, { signal: before.signal }))) instanceof RtspAbortError);
    t.is(cam.connections, 0);
    const timers = refTimers();
    const ac = new AbortController();
    const started = start(cam.url, { signal: ac.signal });
    await until(t, 'DESCRIBE asked', () => cam.requests.length === 1);
    ac.abort(new Error('stopped by test'));
    const err = await t.throwsAsync(started);
    t.true(err instanceof RtspAbortError && err.code === 'RTSP_ABORTED' && err.name === 'AbortError', String(err));
    await until(t, 'the camera sees the connection closed', () => cam.closed === 1);
    t.is(refTimers(), timers);
  },
);

test.serial('UDP: an abort while SETUP waits closes the RTP and RTCP sockets at once', async (t) => {
  t.timeout(10_000);
  const cam = await camera(t, (req, reply, s) => req.method !== 'SETUP' && answering()(req, reply, s));
  const ac = new AbortController();
  const started = start(cam.url, { transport: 'udp', signal: ac.signal });
  await until(t, 'SETUP asked', () => cam.requests.some((r) => r.method === 'SETUP'));
  const timers = refTimers();
  ac.abort();
  t.true((await t.throwsAsync(started)) instanceof RtspAbortError);
  const port = clientPort(cam.requests.find((r) => r.method === 'SETUP')!.transport);
  t.true(await portFree(port));
  t.true(await portFree(port + 1));
  await until(t, 'the camera sees the connection closed', () => cam.closed === 1);
  t.true(refTimers() < timers, 'the SETUP timeout is cleared');
});

test('a failure read in the same read as PLAY’s answer: the start fails with it (no session: no keep-alive or report timers left running)', async (t) => {
  t.timeout(10_000);
  const cam = await camera(t, (req, reply, s) => {
    if (req.method !== 'PLAY') return answering()(req, reply, s);
    // PLAY's answer, then an answer whose length is no length: one write, one read.
    s.write(`RTSP/1.0 200 OK\r\nCSeq: ${req.cseq}\r\nSession: 7;timeout=1\r\n\r\nRTSP/1.0 200 OK\r\nCSeq: 99\r\nContent-Length: -5\r\n\r\n`);
  });
  const err = await t.throwsAsync(start(cam.url, { transport: 'tcp' }));
  t.true(err instanceof TestRtspError && err.kind === 'RTSP', String(err));
  t.regex(err.message, /RTSP body of -5 bytes/);
  await until(t, 'the camera sees the connection closed', () => cam.closed === 1);
});

test('PLAY, GET_PARAMETER and TEARDOWN go to the aggregate control URL: the SDP’s session-level a=control, else Content-Base', async (t) => {
  t.timeout(15_000);
  const run = async (sdp: (origin: string) => string, headers: (origin: string) => Record<string, string>): Promise<Camera> => {
    let origin = '';
    const cam = await camera(t, (req, reply, s) => {
      if (req.method === 'DESCRIBE') return reply('200 OK', { 'Content-Type': 'application/sdp', ...headers(origin) }, sdp(origin));
      if (req.method === 'SETUP') return reply('200 OK', { Session: '7;timeout=1', Transport: 'RTP/AVP/TCP;unicast;interleaved=0-1' });
      reply('200 OK', { Session: '7;timeout=1' });
      void s;
    });
    origin = cam.origin;
    const session = await start(cam.url, { transport: 'tcp' });
    await until(t, 'a keep-alive (every 500 ms with timeout=1)', () => cam.requests.some((r) => r.method === 'GET_PARAMETER'));
    session.close();
    await until(t, 'TEARDOWN', () => cam.requests.some((r) => r.method === 'TEARDOWN'));
    return cam;
  };
  const urls = (cam: Camera, ...methods: string[]): string[] => [...new Set(cam.requests.filter((r) => methods.includes(r.method)).map((r) => r.url))];
  const absolute = await run(
    (o) => `v=0\r\na=control:${o}/agg\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n`,
    (o) => ({ 'Content-Base': `${o}/live/` }),
  );
  t.deepEqual(urls(absolute, 'DESCRIBE'), [`${absolute.origin}/live`]);
  t.deepEqual(urls(absolute, 'SETUP'), [`${absolute.origin}/agg/track1`]);
  t.deepEqual(urls(absolute, 'PLAY', 'GET_PARAMETER', 'TEARDOWN'), [`${absolute.origin}/agg`]);
  const base = await run(
    () => `v=0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n`,
    (o) => ({ 'Content-Base': `${o}/live/` }),
  );
  t.deepEqual(urls(base, 'SETUP'), [`${base.origin}/live/track1`]);
  t.deepEqual(urls(base, 'PLAY', 'GET_PARAMETER', 'TEARDOWN'), [`${base.origin}/live/`]);
});

test('the aggregate URL and the SDP base, as RFC 2326 C.1.1 has them', (t) => {
  const m = 'm=video 0 RTP/AVP 96\r\na=control:trackID=1\r\n';
  t.is(aggregateControl(`v=0\r\na=control:rtsp://cam/agg\r\n${m}`, 'rtsp://cam/live/'), 'rtsp://cam/agg');
  t.is(aggregateControl(`v=0\r\na=control:*\r\n${m}`, 'rtsp://cam/live/'), 'rtsp://cam/live/');
  t.is(aggregateControl(`v=0\r\n${m}`, 'rtsp://cam/live'), 'rtsp://cam/live');
  t.is(aggregateControl(`v=0\r\na=control:stream\r\n${m}`, 'rtsp://cam/live/'), 'rtsp://cam/live/stream');
  t.is(aggregateControl(m, 'rtsp://cam/live'), 'rtsp://cam/live', 'a track’s control is not the session’s');
  const h = (o: Record<string, string>): Map<string, string> => new Map(Object.entries(o));
  t.is(sdpBase(h({ 'content-base': 'rtsp://cam/b/', 'content-location': 'rtsp://cam/l/' }), 'rtsp://cam/live'), 'rtsp://cam/b/');
  t.is(sdpBase(h({ 'content-location': 'rtsp://cam/l/' }), 'rtsp://cam/live'), 'rtsp://cam/l/');
  t.is(sdpBase(h({ 'content-location': 'other/' }), 'rtsp://cam/live/x'), 'rtsp://cam/live/other/');
  t.is(sdpBase(h({}), 'rtsp://cam/live'), 'rtsp://cam/live');
});

test('a UDP SETUP answer: its ports (in range) and its source= (an IP)', (t) => {
  t.deepEqual(udpAnswer('RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;source=10.0.0.9;ssrc=1'), {
    rtpPort: 6970,
    rtcpPort: 6971,
    source: '10.0.0.9',
  });
  t.deepEqual(udpAnswer('RTP/AVP;unicast;server_port=6970'), { rtpPort: 6970, rtcpPort: 6971, source: null });
  t.deepEqual(udpAnswer('RTP/AVP;unicast;server_port=0-70000;source=cam.local'), { rtpPort: null, rtcpPort: null, source: null });
});

/** One RTP packet: V=2, PT 96, marker, `seq`, a 3-byte payload starting with `tag`. */
function rtp(seq: number, tag: number, ssrc = 0x1234): Buffer {
  const p = Buffer.alloc(15);
  p[0] = 0x80;
  p[1] = 0x80 | 96;
  p.writeUInt16BE(seq, 2);
  p.writeUInt32BE(seq * 3000, 4);
  p.writeUInt32BE(ssrc, 8);
  p[12] = tag;
  return p;
}

async function udpSocket(t: ExecutionContext, address: string): Promise<UdpSocket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, address, r));
  t.teardown(() => s.close());
  return s;
}

/** A fake camera answering UDP SETUP with `answer` (server_port, source=…); `client()` is the RTP port we asked from. */
async function udpCamera(t: ExecutionContext, answer: string): Promise<{ cam: Camera; client: () => number }> {
  let client = 0;
  const cam = await camera(t, (req, reply, s) => {
    if (req.method !== 'SETUP') return answering()(req, reply, s);
    client = clientPort(req.transport);
    reply('200 OK', { Session: '7;timeout=60', Transport: `RTP/AVP;unicast;client_port=${client}-${client + 1};${answer}` });
  });
  return { cam, client: () => client };
}

test('UDP: after SETUP the camera’s RTP and RTCP ports (at its source=) get a packet from our ports (NAT); RTP from source= is taken, a stranger’s is not', async (t) => {
  t.timeout(15_000);
  // The camera's media address (source=), not its RTSP one: its RTP and RTCP ports are there.
  const serverRtp = await udpSocket(t, '127.0.0.2');
  const serverRtcp = await udpSocket(t, '127.0.0.2');
  const stranger = await udpSocket(t, '127.0.0.3');
  const punched: { to: string; from: number; bytes: Buffer }[] = [];
  serverRtp.on('message', (bytes, from) => punched.push({ to: 'rtp', from: from.port, bytes }));
  serverRtcp.on('message', (bytes, from) => punched.push({ to: 'rtcp', from: from.port, bytes }));
  const { cam, client } = await udpCamera(t, `server_port=${serverRtp.address().port}-${serverRtcp.address().port};source=127.0.0.2`);
  const got: number[] = [];
  const session = await start(cam.url, { transport: 'udp' }, (p) => got.push(p[0]!));
  t.teardown(() => session.close());
  await until(t, 'a packet to each of the camera’s ports', () => punched.length >= 2);
  const toRtp = punched.find((p) => p.to === 'rtp')!;
  const toRtcp = punched.find((p) => p.to === 'rtcp')!;
  t.is(toRtp.from, client());
  t.is(toRtp.bytes.length, 12);
  t.is(toRtp.bytes[0]! >> 6, 2, 'an RTP header');
  t.is(toRtcp.from, client() + 1);
  t.is(toRtcp.bytes[1], 201, 'an RTCP receiver report');
  stranger.send(rtp(1, 0xee), client(), '127.0.0.1');
  for (let seq = 1; seq <= 3; seq++) serverRtp.send(rtp(seq, seq), client(), '127.0.0.1');
  await until(t, 'the three packets from source=', () => got.length === 3);
  t.deepEqual(got, [1, 2, 3]);
});

test('UDP: a new SSRC (an encoder restart) numbering far behind is taken at once, flagged as after a gap, not dropped as late', async (t) => {
  t.timeout(15_000);
  const serverRtp = await udpSocket(t, '127.0.0.1');
  const { cam, client } = await udpCamera(t, `server_port=${serverRtp.address().port}-${serverRtp.address().port + 1}`);
  const got: { tag: number; gap: boolean }[] = [];
  const session = await start(cam.url, { transport: 'udp' }, (p, gap) => got.push({ tag: p[0]!, gap }));
  t.teardown(() => session.close());
  for (let seq = 40_000; seq < 40_003; seq++) serverRtp.send(rtp(seq, seq - 40_000 + 1), client(), '127.0.0.1');
  await until(t, 'the first source', () => got.length === 3);
  // 30000 is "behind" 40003 in 16-bit order: without the restart these would be dropped as late.
  for (let seq = 30_000; seq < 30_003; seq++) serverRtp.send(rtp(seq, seq - 30_000 + 11, 0x5678), client(), '127.0.0.1');
  await until(t, 'the new source', () => got.length === 6);
  t.deepEqual(
    got.map((g) => g.tag),
    [1, 2, 3, 11, 12, 13],
  );
  t.deepEqual(
    got.map((g) => g.gap),
    [false, false, false, true, false, false],
  );
});
