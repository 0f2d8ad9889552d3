/**
 * The MP2P bridge's login and transport without a real camera (rtsp/mp2p-bridge.ts,
 * rtsp/rtsp-auth.ts): a fake RTSP server that asks for Digest with `qop=auth` checks
 * every request's `Authorization` (DESCRIBE, SETUP, PLAY, TEARDOWN; nc counting up, a
 * stale nonce answered again), refuses TCP with 461 (auto asks for UDP at once,
 * `tcp` does not), and refuses a wrong password (typed, no password in the message).
 * Pure parts: challenge parsing, Basic, the UDP reorder window, Session/Transport headers.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { Mp2pBridgeError, startMp2pBridge } from '../../rtsp/mp2p-bridge.ts';
import { RtpReorder } from '../../rtsp/rtp-reorder.ts';
import { parseSession, transportHeader } from '../../rtsp/rtsp-connection.ts';
import { authorization, parseChallenge, pickChallenge, refusalReason, urlCredentials } from '../../rtsp/rtsp-auth.ts';
import { resetTransportMemory } from '../../rtsp/rtsp-transport.ts';

const md5 = (s: string): string => createHash('md5').update(s).digest('hex');
const SDP = 'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 MP2P/90000\r\na=control:stream=0\r\n';
const USER = 'admin';
const PASSWORD = 'p@ss:w%rd/1';

interface Seen {
  method: string;
  auth: string | null;
  transport: string | null;
}

/**
 * A camera asking for Digest (qop=auth) on every request; `udpOnly`: SETUP over TCP is
 * answered 461; `staleAfter`: that request gets a new nonce with stale=true once.
 */
async function fakeCamera(t: import('ava').ExecutionContext, opts: { udpOnly?: boolean; staleAfter?: string } = {}): Promise<{ port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  let nonce = 'n0nce1';
  let staled = false;
  const check = (method: string, uri: string, header: string | null): boolean => {
    const ch = header ? parseChallenge(header) : null;
    if (!ch || ch.scheme !== 'digest') return false;
    const p = ch.params;
    if (p.username !== USER || p.nonce !== nonce || p.uri !== uri || p.qop !== 'auth' || !/^[0-9a-f]{8}$/.test(p.nc ?? '')) return false;
    const ha1 = md5(`${USER}:cam:${PASSWORD}`);
    return p.response === md5(`${ha1}:${nonce}:${p.nc}:${p.cnonce}:auth:${md5(`${method}:${uri}`)}`);
  };
  const server = createServer((s: Socket) => {
    let buf = '';
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const req = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const [method = '', uri = ''] = req.split(' ');
        const header = (name: string): string | null => new RegExp(`^${name}: (.*)$`, 'im').exec(req)?.[1] ?? null;
        const cseq = header('CSeq');
        seen.push({ method, auth: header('Authorization'), transport: header('Transport') });
        const challenge = (stale: boolean): string =>
          `RTSP/1.0 401 Unauthorized\r\nCSeq: ${cseq}\r\nWWW-Authenticate: Basic realm="cam"\r\nWWW-Authenticate: Digest realm="cam", nonce="${nonce}", qop="auth", opaque="op"${stale ? ', stale=true' : ''}\r\n\r\n`;
        if (method === opts.staleAfter && !staled) {
          staled = true;
          nonce = 'n0nce2';
          s.write(challenge(true));
          continue;
        }
        if (!check(method, uri, header('Authorization'))) {
          s.write(challenge(false));
          continue;
        }
        const tr = header('Transport') ?? '';
        if (method === 'DESCRIBE') s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nContent-Type: application/sdp\r\nContent-Length: ${SDP.length}\r\n\r\n${SDP}`);
        else if (method === 'SETUP' && opts.udpOnly && /TCP/.test(tr)) s.write(`RTSP/1.0 461 Unsupported transport\r\nCSeq: ${cseq}\r\n\r\n`);
        else if (method === 'SETUP') s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 42;timeout=60\r\nTransport: ${tr};server_port=5000-5001\r\n\r\n`);
        else s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 42\r\n\r\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { port: (server.address() as { port: number }).port, seen };
}

const url = (port: number, password = PASSWORD): string => `rtsp://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/live`;

test.serial('Digest with qop=auth on every request (DESCRIBE, SETUP, PLAY, TEARDOWN), nc counting, a stale nonce answered again', async (t) => {
  resetTransportMemory();
  const cam = await fakeCamera(t, { staleAfter: 'PLAY' });
  const bridge = await startMp2pBridge(url(cam.port), 2000, { onBytes: () => undefined });
  t.is(bridge.transport, 'tcp');
  bridge.close();
  await bridge.ended;
  await new Promise((r) => setTimeout(r, 100)); // TEARDOWN reaches the server
  const methods = cam.seen.map((s) => `${s.method}${s.auth ? '+auth' : ''}`);
  // The first DESCRIBE is challenged, then every request carries the login; PLAY's stale nonce is answered once.
  t.deepEqual(methods, ['DESCRIBE', 'DESCRIBE+auth', 'SETUP+auth', 'PLAY+auth', 'PLAY+auth', 'TEARDOWN+auth']);
  const ncs = cam.seen.filter((s) => s.auth).map((s) => parseChallenge(s.auth!)!.params.nc);
  t.deepEqual(ncs, ['00000001', '00000002', '00000003', '00000001', '00000002'], 'nc counts uses of a nonce');
  t.true(cam.seen.every((s) => !s.auth || s.auth.includes('opaque="op"')));
  t.true(cam.seen.every((s) => !s.auth?.includes(PASSWORD)));
});

test.serial('a wrong password: MP2P_AUTH naming user and host, never the password', async (t) => {
  const cam = await fakeCamera(t);
  const err = await t.throwsAsync(startMp2pBridge(url(cam.port, 'Wrong-Secret-3'), 2000, { onBytes: () => undefined }));
  t.true(err instanceof Mp2pBridgeError && err.code === 'MP2P_AUTH' && err.status === 401, String(err));
  t.regex(err.message, /refused the login of user "admin" \(Digest\) to DESCRIBE/);
  t.false(err.message.includes('Wrong-Secret-3'));
  t.is(cam.seen.length, 2, 'asked once with the login, no retry loop');
  const none = await t.throwsAsync(startMp2pBridge(`rtsp://127.0.0.1:${cam.port}/live`, 2000, { onBytes: () => undefined }));
  t.regex(none.message, /MP2P_AUTH: .* has no user and password/);
});

test.serial('transport: auto falls back to UDP at once when TCP is refused 461 and remembers it; tcp does not fall back; http is refused typed', async (t) => {
  resetTransportMemory();
  const cam = await fakeCamera(t, { udpOnly: true });
  const bridge = await startMp2pBridge(url(cam.port), 2000, { onBytes: () => undefined }, { transport: 'auto', memoryKey: 'cam-udp' });
  t.is(bridge.transport, 'udp');
  bridge.close();
  const setups = cam.seen.filter((s) => s.method === 'SETUP' && s.auth).map((s) => s.transport!);
  t.is(setups[0], 'RTP/AVP/TCP;unicast;interleaved=0-1');
  const port = Number(/client_port=(\d+)-(\d+)/.exec(setups[1]!)?.[1]);
  t.is(port % 2, 0, `an even RTP port, RTCP the next: ${setups[1]}`);
  // The next attempt under auto asks for UDP first.
  cam.seen.length = 0;
  const again = await startMp2pBridge(url(cam.port), 2000, { onBytes: () => undefined }, { transport: 'auto', memoryKey: 'cam-udp' });
  again.close();
  t.deepEqual(
    cam.seen.filter((s) => s.method === 'SETUP' && s.auth).map((s) => s.transport!.startsWith('RTP/AVP;unicast;client_port=')),
    [true],
  );
  const tcp = await t.throwsAsync(startMp2pBridge(url(cam.port), 2000, { onBytes: () => undefined }, { transport: 'tcp' }));
  t.true(tcp instanceof Mp2pBridgeError && tcp.code === 'MP2P_TRANSPORT' && tcp.status === 461, String(tcp));
  const http = await t.throwsAsync(startMp2pBridge(url(cam.port), 2000, { onBytes: () => undefined }, { transport: 'http' }));
  t.true(http instanceof Mp2pBridgeError && http.code === 'MP2P_TRANSPORT', String(http));
  t.false(http.message.includes(PASSWORD) || http.message.includes(encodeURIComponent(PASSWORD)));
  resetTransportMemory();
});

test('challenges: Digest MD5 preferred over Basic, unknown schemes and algorithms ignored; Basic header; URL user info decoded', (t) => {
  t.is(pickChallenge(['Basic realm="x"', 'Digest realm="x", nonce="n", algorithm=MD5'])?.scheme, 'digest');
  t.is(pickChallenge(['Basic realm="x"', 'Digest realm="x", nonce="n", algorithm=SHA-256'])?.scheme, 'basic');
  t.is(pickChallenge(['Negotiate abc']), null);
  t.deepEqual(parseChallenge('Digest realm="a b", nonce=xyz, qop="auth,auth-int"')?.params, { realm: 'a b', nonce: 'xyz', qop: 'auth,auth-int' });
  t.is(
    authorization({ scheme: 'basic', params: {} }, { user: 'u', password: 'p:w' }, 'DESCRIBE', 'rtsp://h/'),
    `Basic ${Buffer.from('u:p:w').toString('base64')}`,
  );
  // RFC 2617 without qop: response = MD5(HA1:nonce:HA2).
  const a = authorization({ scheme: 'digest', params: { realm: 'r', nonce: 'n' } }, { user: 'u', password: 'p' }, 'SETUP', 'rtsp://h/s');
  t.true(a.includes(`response="${md5(`${md5('u:r:p')}:n:${md5('SETUP:rtsp://h/s')}`)}"`), a);
  t.false(a.includes('qop'));
  t.deepEqual(urlCredentials(new URL(`rtsp://ad%20min:${encodeURIComponent(PASSWORD)}@h/`)), { user: 'ad min', password: PASSWORD });
  t.is(urlCredentials(new URL('rtsp://h/')), null);
  t.regex(refusalReason('h:554', 'SETUP', { user: 'u', password: 'p' }, null, ['Negotiate x']), /scheme we do not speak \(Negotiate;/);
});

test('UDP reorder window: reordered packets come out in order without loss; a hole is given up after the window or the wait, counted and flagged', (t) => {
  const out: string[] = [];
  const r = new RtpReorder<Buffer>((p, gap) => out.push(`${p.toString()}${gap ? '!' : ''}`), 4, 100);
  const b = (s: string): Buffer => Buffer.from(s);
  r.push(65534, b('a'), 0);
  r.push(0, b('c'), 1); // ahead across the wrap: waits
  r.push(65535, b('b'), 2);
  t.deepEqual(out, ['a', 'b', 'c']);
  t.is(r.lost, 0);
  r.push(2, b('e'), 3); // 1 missing
  r.push(3, b('f'), 4);
  t.deepEqual(out, ['a', 'b', 'c'], 'held while the hole may still fill');
  r.drain(200); // waited past 100 ms: given up
  t.deepEqual(out, ['a', 'b', 'c', 'e!', 'f']);
  t.is(r.lost, 1);
  r.push(1, b('late'), 201); // behind: dropped
  t.deepEqual(out.length, 5);
  for (const s of [5, 6, 7, 8]) r.push(s, b(String(s)), 202); // 4 is lost: the window (4) fills
  t.deepEqual(out.slice(5), ['5!', '6', '7', '8']);
  t.is(r.lost, 2);
  // A jump ahead is a hole like any: given up once the window fills.
  for (const s of [100, 101, 102, 103]) r.push(s, b(`j${s}`), 300);
  t.deepEqual(out.slice(9), ['j100!', 'j101', 'j102', 'j103']);
  t.is(r.lost, 2 + 91);
  // A camera that restarts its numbering far behind is followed after a window of packets.
  for (const s of [60000, 60001, 60002, 60003, 60004]) r.push(s, b(`r${s}`), 400);
  t.deepEqual(out.slice(13), ['r60003!', 'r60004']);
});

test('Session timeout and SETUP Transport headers', (t) => {
  t.deepEqual(parseSession('12345678;timeout=30'), { id: '12345678', timeoutS: 30 });
  t.deepEqual(parseSession('abc'), { id: 'abc', timeoutS: 60 });
  t.is(transportHeader('tcp'), 'RTP/AVP/TCP;unicast;interleaved=0-1');
  t.is(transportHeader('udp', 50000), 'RTP/AVP;unicast;client_port=50000-50001');
  t.is(transportHeader('tcp', 0, 2), 'RTP/AVP/TCP;unicast;interleaved=2-3', 'a second track on the next channels');
});
