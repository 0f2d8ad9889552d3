/**
 * GB28181-style cameras send MPEG-PS over RTP (`a=rtpmap:96 MP2P/90000`), which
 * ffmpeg 5.1's RTSP client does not depacketize (the stream shows as "unknown codec").
 * This bridge is a minimal RTSP client for such a camera: DESCRIBE, SETUP, PLAY,
 * GET_PARAMETER keep-alives and TEARDOWN; the RTP payloads of the MP2P stream are the
 * program stream byte for byte, in sequence order, and go to the caller's sink
 * (ingest/mp2p-ingest.ts reads them with our own PS reader; no ffmpeg).
 *
 * Login: a 401 to any request is answered once with Basic or Digest (MD5, `qop=auth`;
 * rtsp/rtsp-auth.ts) from the URL's percent-encoded user info; once challenged, every
 * later request carries its `Authorization` (Digest with a counted `nc`), and a new
 * challenge (a stale nonce) is answered again. A 401 to the answer fails the bridge
 * with MP2P_AUTH, whose message names user and host, never the password.
 *
 * Transport (the camera's `transport` setting, rtsp/rtsp-transport.ts): `tcp` is RTP
 * interleaved in the RTSP connection (channels 0-1); `udp` is RTP to a local even port
 * and RTCP to the next (any interface, no NAT traversal); `auto` asks for what the
 * camera took last time (TCP first) and, when SETUP is refused 461 Unsupported
 * transport, asks at once for the other on the same connection (and remembers it for
 * the next attempts). `http` tunnelling is not done for MP2P: MP2P_TRANSPORT.
 *
 * Bounds and failures: the sink is called synchronously per RTP packet. `pause()`
 * stops reading the camera's TCP socket (back-pressure) until `resume()`; over UDP the
 * camera cannot be slowed, so packets that arrive while paused are dropped and counted
 * lost. Over UDP packets are put back in sequence order in a window of REORDER_PACKETS
 * packets or REORDER_MS; a hole still open then is given up. A gap in RTP sequence
 * numbers is counted (`lostPackets`) and flagged to the sink with the packet after it,
 * so the reader drops its partial packet and resynchronises. A DESCRIBE answered 5xx
 * is asked again (DESCRIBE_ATTEMPTS). RTSP errors, a refused login, a refused
 * transport, a session without an MP2P stream and a silent camera fail the bridge with
 * a typed Mp2pBridgeError; `close()` sends TEARDOWN and ends the connection.
 */
import { connect, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { authorization, pickChallenge, refusalReason, urlCredentials, type Challenge, type Credentials } from './rtsp-auth.ts';
import { chooseTransport, noteRefused, type RtspTransport, type TransportSetting } from './rtsp-transport.ts';
import { redactText } from '../lib/redact.ts';

export type Mp2pBridgeErrorCode = 'MP2P_CONNECT' | 'MP2P_RTSP' | 'MP2P_NO_STREAM' | 'MP2P_AUTH' | 'MP2P_TIMEOUT' | 'MP2P_TRANSPORT';

export class Mp2pBridgeError extends Error {
  constructor(
    readonly code: Mp2pBridgeErrorCode,
    message: string,
    /** The RTSP status of a refused request (MP2P_RTSP, MP2P_AUTH, MP2P_TRANSPORT); null otherwise. */
    readonly status: number | null = null,
  ) {
    super(redactText(message));
    this.name = 'Mp2pBridgeError';
  }
}

const MAX_MESSAGE_BYTES = 256 * 1024;
const KEEPALIVE_MS = 20_000;
/**
 * A DESCRIBE answered 5xx is asked again on the same connection, this many times in all,
 * this far apart (as rtsp/rtsp-describe.ts's describeWithRetry does): GStreamer's server
 * answers 503 to a DESCRIBE that arrives while it unprepares the shared media of a client
 * that just left, and the ingest's own DESCRIBE (ingest/camera-ingest.ts) is such a client,
 * closed a moment before this bridge connects. Without this, most attempts on a loaded
 * machine failed so (14 of 20 measured), each doubling the camera's backoff up to its 30 s
 * cap: a camera that came back was recorded again only minutes later.
 */
const DESCRIBE_ATTEMPTS = 3;
const DESCRIBE_RETRY_MS = 700;

/** UDP: packets held to put a reordered stream back in sequence, at most this many … */
const REORDER_PACKETS = 64;
/** … and this long, before a hole is given up as lost. */
const REORDER_MS = 200;
/** TEARDOWN's moment to leave before the connection is cut. */
const TEARDOWN_GRACE_MS = 500;

interface RtspResponse {
  status: number;
  headers: Map<string, string>;
  /** Every `WWW-Authenticate` value (a camera may offer Basic and Digest). */
  challenges: string[];
  body: string;
}

/**
 * Reads RTSP responses and `$`-framed interleaved data from one TCP connection. A
 * response goes to the request of its CSeq (one that timed out is forgotten), else,
 * for cameras that echo no CSeq or a wrong one, to the oldest waiting request.
 */
class RtspReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiting = new Map<number, (r: RtspResponse) => void>();
  constructor(private readonly onFrame: (channel: number, payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.buf.length === 0) return;
      if (this.buf[0] === 0x24) {
        if (this.buf.length < 4) return;
        const len = this.buf.readUInt16BE(2);
        if (this.buf.length < 4 + len) return;
        this.onFrame(this.buf[1]!, this.buf.subarray(4, 4 + len));
        this.buf = this.buf.subarray(4 + len);
        continue;
      }
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.buf.length > MAX_MESSAGE_BYTES) throw new Mp2pBridgeError('MP2P_RTSP', 'RTSP header too long');
        return;
      }
      const lines = this.buf.toString('latin1', 0, end).split('\r\n');
      const headers = new Map<string, string>();
      const challenges: string[] = [];
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i <= 0) continue;
        const name = l.slice(0, i).trim().toLowerCase();
        const value = l.slice(i + 1).trim();
        headers.set(name, value);
        if (name === 'www-authenticate') challenges.push(value);
      }
      const bodyLen = Number(headers.get('content-length') ?? 0);
      if (bodyLen > MAX_MESSAGE_BYTES) throw new Mp2pBridgeError('MP2P_RTSP', `RTSP body of ${bodyLen} bytes`);
      if (this.buf.length < end + 4 + bodyLen) return;
      const m = /^RTSP\/1\.0 (\d{3})/.exec(lines[0] ?? '');
      const body = this.buf.toString('utf8', end + 4, end + 4 + bodyLen);
      this.buf = this.buf.subarray(end + 4 + bodyLen);
      if (!m) continue; // a request from the server (e.g. OPTIONS): ignored
      const cseq = Number(headers.get('cseq'));
      const key = this.waiting.has(cseq) ? cseq : this.waiting.keys().next().value;
      if (key === undefined) continue; // the answer to a request no one waits for any more
      const w = this.waiting.get(key)!;
      this.waiting.delete(key);
      w({ status: Number(m[1]), headers, challenges, body });
    }
  }

  next(cseq: number): Promise<RtspResponse> {
    return new Promise((resolve) => this.waiting.set(cseq, resolve));
  }

  forget(cseq: number): void {
    this.waiting.delete(cseq);
  }
}

/** The MP2P media of an SDP: payload type and control URL; null when there is none. */
export function findMp2p(sdp: string, base: string): { payloadType: number; control: string } | null {
  const sections = sdp.split(/\r?\n(?=m=)/);
  for (const s of sections) {
    if (!s.startsWith('m=')) continue;
    const rtpmap = /^a=rtpmap:(\d+)\s+MP2P\/90000/im.exec(s);
    if (!rtpmap) continue;
    const control = /^a=control:(\S+)/im.exec(s)?.[1] ?? '';
    const url = /^rtsps?:\/\//i.test(control) ? control : control === '' || control === '*' ? base : `${base.replace(/\/$/, '')}/${control}`;
    return { payloadType: Number(rtpmap[1]), control: url };
  }
  return null;
}

/** The RTP payload (CSRCs, extension and padding removed); null if not RTP version 2. */
export function rtpPayload(p: Buffer): { seq: number; payloadType: number; payload: Buffer } | null {
  if (p.length < 12 || p[0]! >> 6 !== 2) return null;
  let at = 12 + 4 * (p[0]! & 0x0f);
  if (p[0]! & 0x10) {
    if (p.length < at + 4) return null;
    at += 4 + 4 * p.readUInt16BE(at + 2);
  }
  let end = p.length;
  if (p[0]! & 0x20) end -= p[p.length - 1]!;
  if (at > end) return null;
  return { seq: p.readUInt16BE(2), payloadType: p[1]! & 0x7f, payload: p.subarray(at, end) };
}

/**
 * Puts RTP packets that arrive over UDP back in sequence order. A packet ahead of the
 * next expected one waits while fewer than `window` packets wait and the oldest has
 * waited less than `maxWaitMs`; then the hole is given up (counted lost, the next packet
 * flagged as after a gap). A packet behind (its place given up, or repeated) is dropped;
 * `window` of them in a row mean the camera restarted its numbering: followed.
 */
export class RtpReorder {
  lost = 0;
  private expect = -1;
  private gap = false;
  private behind = 0;
  private readonly pending = new Map<number, { payload: Buffer; at: number }>();
  constructor(
    private readonly emit: (payload: Buffer, gap: boolean) => void,
    private readonly window = REORDER_PACKETS,
    private readonly maxWaitMs = REORDER_MS,
  ) {}

  push(seq: number, payload: Buffer, now: number): void {
    if (this.expect < 0) this.expect = seq;
    const ahead = (seq - this.expect + 0x10000) & 0xffff;
    if (ahead >= 0x8000) {
      if (++this.behind < this.window) return;
      this.restart(true);
      this.expect = seq;
    }
    this.behind = 0;
    if (!this.pending.has(seq)) this.pending.set(seq, { payload, at: now });
    this.drain(now);
  }

  /** Gives up holes that waited too long (call now and then: a hole may end a burst). */
  drain(now: number): void {
    for (;;) {
      const p = this.pending.get(this.expect);
      if (p) {
        this.pending.delete(this.expect);
        this.expect = (this.expect + 1) & 0xffff;
        if (p.payload.length > 0) {
          this.emit(p.payload, this.gap);
          this.gap = false;
        }
        continue;
      }
      if (this.pending.size === 0) return;
      let oldest = Infinity;
      let skip = 0x10000;
      for (const [s, q] of this.pending) {
        oldest = Math.min(oldest, q.at);
        skip = Math.min(skip, (s - this.expect + 0x10000) & 0xffff);
      }
      if (this.pending.size < this.window && now - oldest < this.maxWaitMs) return;
      this.lost += skip;
      this.expect = (this.expect + skip) & 0xffff;
      this.gap = true;
    }
  }

  /** Forgets what waits and where the sequence was (packets dropped meanwhile); `gap`: flag the next. */
  restart(gap: boolean): void {
    this.pending.clear();
    this.expect = -1;
    this.behind = 0;
    if (gap) this.gap = true;
  }
}

/** The `Session` id and its timeout (seconds; RFC 2326 default 60) from a response. */
export function parseSession(value: string): { id: string; timeoutS: number } {
  const [id = '', ...params] = value.split(';');
  const t = params.map((p) => /^\s*timeout\s*=\s*(\d+)/i.exec(p)?.[1]).find((x) => x !== undefined);
  return { id: id.trim(), timeoutS: t !== undefined && Number(t) > 0 ? Number(t) : 60 };
}

/** The SETUP `Transport` header asking for `transport` (`rtpPort`: the local even port, UDP). */
export function transportHeader(transport: 'tcp' | 'udp', rtpPort = 0): string {
  return transport === 'tcp' ? 'RTP/AVP/TCP;unicast;interleaved=0-1' : `RTP/AVP;unicast;client_port=${rtpPort}-${rtpPort + 1}`;
}

/**
 * One RTSP connection's requests: CSeq, Session, and the login. Once a camera has
 * challenged, every request carries an `Authorization` for it (Digest: nc counts up);
 * a 401 is answered once per request with the challenge it carries.
 */
class RtspSession {
  private cseq = 0;
  session = '';
  timeoutS = 60;
  private challenge: Challenge | null = null;
  private nc = 0;
  constructor(
    private readonly sock: Socket,
    private readonly reader: RtspReader,
    private readonly cred: Credentials | null,
    private readonly host: string,
  ) {}

  private authorize(method: string, url: string): Record<string, string> {
    if (!this.challenge || !this.cred) return {};
    return { Authorization: authorization(this.challenge, this.cred, method, url, ++this.nc) };
  }

  private send(method: string, url: string, extra: Record<string, string>): number {
    const cseq = ++this.cseq;
    const headers = {
      CSeq: String(cseq),
      'User-Agent': 'ipcam-recorder',
      ...(this.session ? { Session: this.session } : {}),
      ...this.authorize(method, url),
      ...extra,
    };
    this.sock.write(
      `${method} ${url} RTSP/1.0\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}`)
        .join('\r\n')}\r\n\r\n`,
    );
    return cseq;
  }

  private async exchange(method: string, url: string, extra: Record<string, string>, timeoutMs: number): Promise<RtspResponse> {
    const cseq = this.cseq + 1;
    const reply = this.reader.next(cseq);
    this.send(method, url, extra);
    try {
      return await withTimeout(reply, timeoutMs, method);
    } finally {
      this.reader.forget(cseq);
    }
  }

  /** The camera's 200 answer; any other fails typed (the status kept). */
  async request(method: string, url: string, timeoutMs: number, extra: Record<string, string> = {}): Promise<RtspResponse> {
    let r = await this.exchange(method, url, extra, timeoutMs);
    if (r.status === 401) {
      const ch = pickChallenge(r.challenges);
      if (!ch || !this.cred)
        throw new Mp2pBridgeError('MP2P_AUTH', refusalReason(this.host, method, this.cred, ch, r.challenges).replace(/^RTSP_AUTH/, 'MP2P_AUTH'), 401);
      this.challenge = ch;
      this.nc = 0;
      r = await this.exchange(method, url, extra, timeoutMs);
      if (r.status === 401)
        throw new Mp2pBridgeError('MP2P_AUTH', refusalReason(this.host, method, this.cred, ch, r.challenges).replace(/^RTSP_AUTH/, 'MP2P_AUTH'), 401);
    }
    if (r.status !== 200) throw new Mp2pBridgeError(r.status === 461 ? 'MP2P_TRANSPORT' : 'MP2P_RTSP', `${method} ${url}: ${r.status}`, r.status);
    const s = r.headers.get('session');
    if (s) ({ id: this.session, timeoutS: this.timeoutS } = parseSession(s));
    return r;
  }

  /** A request whose answer is not waited for (TEARDOWN on the way out). */
  fire(method: string, url: string): void {
    this.send(method, url, {});
  }
}

function open(url: URL, timeoutMs: number, onFrame: (ch: number, p: Buffer) => void): Promise<{ sock: Socket; rtsp: RtspSession }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 554) });
    const reader = new RtspReader(onFrame);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Mp2pBridgeError('MP2P_TIMEOUT', `no connection to ${url.host} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve({ sock, rtsp: new RtspSession(sock, reader, urlCredentials(url), url.host) });
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(new Mp2pBridgeError('MP2P_CONNECT', `${url.host}: ${err.message}`));
    });
    sock.on('data', (c: Buffer) => {
      try {
        reader.push(c);
      } catch (err) {
        sock.destroy(err as Error);
      }
    });
  });
}

/** The URL without user:password (never sent in a request line: the login is in `Authorization`). */
function requestUrl(url: URL): string {
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return u.href;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Mp2pBridgeError('MP2P_TIMEOUT', `${what}: no answer within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** Whether the camera's session carries MPEG-PS over RTP (one DESCRIBE). */
export async function isMp2pCamera(cameraUrl: string, timeoutMs: number): Promise<boolean> {
  const url = new URL(cameraUrl);
  const rtspUrl = requestUrl(url);
  const { sock, rtsp } = await open(url, timeoutMs, () => undefined);
  try {
    const r = await rtsp.request('DESCRIBE', rtspUrl, timeoutMs, { Accept: 'application/sdp' });
    return findMp2p(r.body, r.headers.get('content-base') ?? rtspUrl) !== null;
  } finally {
    sock.destroy();
  }
}

export interface Mp2pSink {
  /**
   * The program-stream bytes of one RTP packet, in sequence order. `gap`: packets are
   * missing (or out of order) right before this one.
   */
  onBytes(bytes: Buffer, gap: boolean): void;
}

export interface Mp2pBridgeOptions {
  /** The camera's transport setting (default `auto`); `http` is refused (MP2P_TRANSPORT). */
  transport?: TransportSetting;
  /** Names the camera across attempts for what `auto` learns (default the URL). */
  memoryKey?: string;
}

export interface Mp2pBridge {
  /** RTP packets missing by sequence number so far. */
  readonly lostPackets: number;
  /** The lower transport the camera took. */
  readonly transport: RtspTransport;
  /** Settles when the camera connection ends (with the reason) or close() is called. */
  readonly ended: Promise<Error | null>;
  /** Stops reading the camera (TCP back-pressure; over UDP packets are dropped) until resume(). */
  pause(): void;
  resume(): void;
  close(): void;
}

/** Two UDP sockets on an even port and the next (RTP, RTCP), any interface. */
async function bindRtpPair(family: 'udp4' | 'udp6'): Promise<{ rtp: UdpSocket; rtcp: UdpSocket; port: number }> {
  const bind = (s: UdpSocket, port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const onError = (): void => resolve(false);
      s.once('error', onError);
      s.bind(port, () => {
        s.off('error', onError);
        resolve(true);
      });
    });
  for (let i = 0; i < 20; i++) {
    const rtp = createSocket(family);
    if (!(await bind(rtp, 0))) {
      rtp.close();
      continue;
    }
    const port = rtp.address().port;
    const rtcp = createSocket(family);
    if (port % 2 === 0 && port < 65535 && (await bind(rtcp, port + 1))) return { rtp, rtcp, port };
    rtp.close();
    try {
      rtcp.close();
    } catch {
      /* never bound */
    }
  }
  throw new Mp2pBridgeError('MP2P_CONNECT', 'no pair of local UDP ports for RTP and RTCP');
}

/** Connects to the camera and starts the stream; resolves once PLAY succeeded. */
export async function startMp2pBridge(cameraUrl: string, timeoutMs: number, sink: Mp2pSink, opts: Mp2pBridgeOptions = {}): Promise<Mp2pBridge> {
  const url = new URL(cameraUrl);
  const rtspUrl = requestUrl(url);
  const setting = opts.transport ?? 'auto';
  const memoryKey = opts.memoryKey ?? cameraUrl;
  if (setting === 'http')
    throw new Mp2pBridgeError(
      'MP2P_TRANSPORT',
      `transport "http" (RTSP tunnelled in HTTP) is not supported for MP2P cameras (${url.host}): set transport to auto, tcp or udp`,
    );
  let channel = -1;
  let expectSeq = -1;
  let tcpLost = 0;
  let endedResolve!: (e: Error | null) => void;
  const ended = new Promise<Error | null>((r) => (endedResolve = r));
  let closed = false;
  let paused = false;
  let playing = false;
  let udp: { rtp: UdpSocket; rtcp: UdpSocket } | null = null;
  let udpDropped = 0;
  const reorder = new RtpReorder((payload, gap) => sink.onBytes(payload, gap));
  let reorderTimer: NodeJS.Timeout | null = null;

  const { sock, rtsp } = await open(url, timeoutMs, (ch, p) => {
    if (ch !== channel || closed) return; // RTCP or another stream
    const rtp = rtpPayload(p);
    if (!rtp) return;
    let gap = false;
    if (expectSeq >= 0 && rtp.seq !== expectSeq) {
      const ahead = (rtp.seq - expectSeq + 0x10000) & 0xffff;
      if (ahead < 0x8000) tcpLost += ahead; // else a late or repeated packet: no count, but a hole all the same
      gap = true;
    }
    expectSeq = (rtp.seq + 1) & 0xffff;
    if (rtp.payload.length > 0) sink.onBytes(rtp.payload, gap);
  });
  let keepalive: NodeJS.Timeout | null = null;
  function finish(err: Error | null): void {
    if (closed) return;
    closed = true;
    if (keepalive) clearInterval(keepalive);
    if (reorderTimer) clearInterval(reorderTimer);
    if (udp) {
      udp.rtp.close();
      udp.rtcp.close();
    }
    if (err === null && playing && !sock.destroyed) {
      // Asked to stop: the camera is told (a UDP session would otherwise stream on until it times out).
      try {
        rtsp.fire('TEARDOWN', rtspUrl);
        sock.end();
        setTimeout(() => sock.destroy(), TEARDOWN_GRACE_MS).unref();
      } catch {
        sock.destroy();
      }
    } else {
      sock.destroy();
    }
    endedResolve(err);
  }
  sock.on('close', () => finish(new Mp2pBridgeError('MP2P_RTSP', 'camera closed the RTSP connection')));
  sock.on('error', (err) => finish(err instanceof Mp2pBridgeError ? err : new Mp2pBridgeError('MP2P_RTSP', err.message)));
  const describe = async (): Promise<RtspResponse> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await rtsp.request('DESCRIBE', rtspUrl, timeoutMs, { Accept: 'application/sdp' });
      } catch (err) {
        if (attempt >= DESCRIBE_ATTEMPTS || !(err instanceof Mp2pBridgeError) || err.status === null || err.status < 500) throw err;
        await new Promise((r) => setTimeout(r, DESCRIBE_RETRY_MS));
        if (closed) throw new Mp2pBridgeError('MP2P_RTSP', 'camera closed the RTSP connection');
      }
    }
  };
  /** SETUP over `transport`; a refusal (461) is thrown as MP2P_TRANSPORT. */
  const setup = async (control: string, transport: 'tcp' | 'udp'): Promise<void> => {
    if (transport === 'tcp') {
      const r = await rtsp.request('SETUP', control, timeoutMs, { Transport: transportHeader('tcp') });
      const t = r.headers.get('transport') ?? '';
      if (/RTP\/AVP(?!\/TCP)/i.test(t) && !/interleaved=/i.test(t))
        throw new Mp2pBridgeError('MP2P_TRANSPORT', `SETUP ${control}: the camera answered TCP with ${t}`, 461);
      channel = Number(/interleaved=(\d+)/.exec(t)?.[1] ?? 0);
      return;
    }
    const pair = await bindRtpPair(sock.remoteFamily === 'IPv6' ? 'udp6' : 'udp4');
    udp = pair;
    const camera = sock.remoteAddress;
    pair.rtcp.on('message', () => undefined); // sender reports: read and dropped
    pair.rtcp.on('error', () => undefined);
    pair.rtp.on('error', (err) => finish(new Mp2pBridgeError('MP2P_RTSP', `RTP socket: ${err.message}`)));
    pair.rtp.on('message', (msg, from) => {
      if (closed || from.address !== camera) return; // only the camera's packets
      if (paused) {
        udpDropped++;
        return;
      }
      const rtp = rtpPayload(msg);
      if (rtp) reorder.push(rtp.seq, rtp.payload, Date.now());
    });
    try {
      await rtsp.request('SETUP', control, timeoutMs, { Transport: transportHeader('udp', pair.port) });
    } catch (err) {
      udp = null;
      pair.rtp.close();
      pair.rtcp.close();
      throw err;
    }
    reorderTimer = setInterval(() => reorder.drain(Date.now()), REORDER_MS / 2);
    reorderTimer.unref();
  };
  let used: RtspTransport = chooseTransport(memoryKey, setting);
  try {
    const described = await describe();
    const media = findMp2p(described.body, described.headers.get('content-base') ?? rtspUrl);
    if (!media) throw new Mp2pBridgeError('MP2P_NO_STREAM', `${url.host}${url.pathname} has no MP2P/90000 stream`);
    let control = media.control;
    try {
      control = requestUrl(new URL(media.control)); // no user info on a request line
    } catch {
      /* not a URL we can parse: asked as the camera wrote it */
    }
    try {
      await setup(control, used as 'tcp' | 'udp');
    } catch (err) {
      // auto: a camera that refuses one lower transport is asked for the other at once.
      if (setting !== 'auto' || !(err instanceof Mp2pBridgeError) || err.code !== 'MP2P_TRANSPORT' || closed) throw err;
      noteRefused(memoryKey, used);
      used = used === 'tcp' ? 'udp' : 'tcp';
      await setup(control, used);
    }
    await rtsp.request('PLAY', rtspUrl, timeoutMs, { Range: 'npt=0.000-' });
    playing = true;
  } catch (err) {
    finish(err as Error);
    throw err;
  }
  // Keep-alives well inside the session's timeout; a refused login now ends the bridge.
  keepalive = setInterval(
    () => {
      rtsp.request('GET_PARAMETER', rtspUrl, timeoutMs).catch((err: unknown) => {
        if (err instanceof Mp2pBridgeError && err.code === 'MP2P_AUTH') finish(err);
      });
    },
    Math.min(KEEPALIVE_MS, (rtsp.timeoutS * 1000) / 2),
  );
  keepalive.unref();
  return {
    get lostPackets() {
      return tcpLost + reorder.lost + udpDropped;
    },
    transport: used,
    ended,
    pause: () => {
      paused = true;
      if (!udp) sock.pause();
    },
    resume: () => {
      paused = false;
      if (udp) reorder.restart(true);
      else sock.resume();
    },
    close: () => finish(null),
  };
}
