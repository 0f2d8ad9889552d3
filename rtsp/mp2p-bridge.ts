/**
 * GB28181-style cameras send MPEG-PS over RTP (`a=rtpmap:96 MP2P/90000`), which
 * ffmpeg 5.1's RTSP client does not depacketize (the stream shows as "unknown codec").
 * This bridge is a minimal RTSP client for such a camera: DESCRIBE, SETUP (RTP over the
 * RTSP TCP connection, interleaved 0-1), PLAY; the RTP payloads of the MP2P stream are
 * the program stream byte for byte, in sequence order, and go to the caller's sink
 * (ingest/mp2p-ingest.ts reads them with our own PS reader; no ffmpeg).
 *
 * Bounds and failures: the sink is called synchronously per RTP packet; `pause()`
 * stops reading the camera's socket (TCP back-pressure) until `resume()`. A gap in RTP
 * sequence numbers is counted (`lostPackets`) and flagged to the sink with the packet
 * after it, so the reader drops its partial packet and resynchronises. A DESCRIBE
 * answered 5xx is asked again (DESCRIBE_ATTEMPTS). RTSP errors, a 401 (no
 * authentication here), a session without an MP2P stream and a silent camera fail the
 * bridge with a typed Mp2pBridgeError; `close()` ends the connection.
 */
import { connect, type Socket } from 'node:net';

export class Mp2pBridgeError extends Error {
  constructor(
    readonly code: 'MP2P_CONNECT' | 'MP2P_RTSP' | 'MP2P_NO_STREAM' | 'MP2P_AUTH' | 'MP2P_TIMEOUT',
    message: string,
    /** The RTSP status of a refused request (MP2P_RTSP, MP2P_AUTH); null otherwise. */
    readonly status: number | null = null,
  ) {
    super(message);
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

interface RtspResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Reads RTSP responses and `$`-framed interleaved data from one TCP connection. */
class RtspReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((r: RtspResponse) => void) | null = null;
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
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
      }
      const bodyLen = Number(headers.get('content-length') ?? 0);
      if (bodyLen > MAX_MESSAGE_BYTES) throw new Mp2pBridgeError('MP2P_RTSP', `RTSP body of ${bodyLen} bytes`);
      if (this.buf.length < end + 4 + bodyLen) return;
      const m = /^RTSP\/1\.0 (\d{3})/.exec(lines[0] ?? '');
      const body = this.buf.toString('utf8', end + 4, end + 4 + bodyLen);
      this.buf = this.buf.subarray(end + 4 + bodyLen);
      if (!m) continue; // a request from the server (e.g. OPTIONS): ignored
      const w = this.waiting;
      this.waiting = null;
      w?.({ status: Number(m[1]), headers, body });
    }
  }

  next(): Promise<RtspResponse> {
    return new Promise((resolve) => (this.waiting = resolve));
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

class RtspSession {
  private cseq = 0;
  private session = '';
  constructor(
    private readonly sock: Socket,
    private readonly reader: RtspReader,
  ) {}

  async request(method: string, url: string, extra: Record<string, string> = {}): Promise<RtspResponse> {
    const headers = { CSeq: String(++this.cseq), 'User-Agent': 'ipcam-recorder', ...(this.session ? { Session: this.session } : {}), ...extra };
    const text = `${method} ${url} RTSP/1.0\r\n${Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}`)
      .join('\r\n')}\r\n\r\n`;
    const reply = this.reader.next();
    this.sock.write(text);
    const r = await reply;
    if (r.status === 401) throw new Mp2pBridgeError('MP2P_AUTH', `${method} ${url}: 401 (the MP2P bridge does not authenticate)`, 401);
    if (r.status !== 200) throw new Mp2pBridgeError('MP2P_RTSP', `${method} ${url}: ${r.status}`, r.status);
    const s = r.headers.get('session');
    if (s) this.session = s.split(';')[0]!.trim();
    return r;
  }

  keepalive(url: string): void {
    this.sock.write(`GET_PARAMETER ${url} RTSP/1.0\r\nCSeq: ${++this.cseq}\r\nSession: ${this.session}\r\n\r\n`);
    void this.reader.next(); // the reply is read and dropped
  }
}

function open(url: URL, timeoutMs: number, onFrame: (ch: number, p: Buffer) => void): Promise<{ sock: Socket; rtsp: RtspSession }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: url.hostname, port: Number(url.port || 554) });
    const reader = new RtspReader(onFrame);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Mp2pBridgeError('MP2P_TIMEOUT', `no connection to ${url.host} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve({ sock, rtsp: new RtspSession(sock, reader) });
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

/** The URL without user:password (never sent in a request line; this client does not authenticate). */
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
    const r = await withTimeout(rtsp.request('DESCRIBE', rtspUrl, { Accept: 'application/sdp' }), timeoutMs, 'DESCRIBE');
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

export interface Mp2pBridge {
  /** RTP packets missing by sequence number so far. */
  readonly lostPackets: number;
  /** Settles when the camera connection ends (with the reason) or close() is called. */
  readonly ended: Promise<Error | null>;
  /** Stops reading the camera (TCP back-pressure) until resume(). */
  pause(): void;
  resume(): void;
  close(): void;
}

/** Connects to the camera and starts the stream; resolves once PLAY succeeded. */
export async function startMp2pBridge(cameraUrl: string, timeoutMs: number, sink: Mp2pSink): Promise<Mp2pBridge> {
  const url = new URL(cameraUrl);
  const rtspUrl = requestUrl(url);
  let channel = -1;
  let expectSeq = -1;
  let lost = 0;
  let endedResolve!: (e: Error | null) => void;
  const ended = new Promise<Error | null>((r) => (endedResolve = r));
  let closed = false;

  const { sock, rtsp } = await open(url, timeoutMs, (ch, p) => {
    if (ch !== channel || closed) return; // RTCP or another stream
    const rtp = rtpPayload(p);
    if (!rtp) return;
    let gap = false;
    if (expectSeq >= 0 && rtp.seq !== expectSeq) {
      const ahead = (rtp.seq - expectSeq + 0x10000) & 0xffff;
      if (ahead < 0x8000) lost += ahead; // else a late or repeated packet: no count, but a hole all the same
      gap = true;
    }
    expectSeq = (rtp.seq + 1) & 0xffff;
    if (rtp.payload.length > 0) sink.onBytes(rtp.payload, gap);
  });
  const keepalive = setInterval(() => rtsp.keepalive(rtspUrl), KEEPALIVE_MS);
  keepalive.unref();
  function finish(err: Error | null): void {
    if (closed) return;
    closed = true;
    clearInterval(keepalive);
    sock.destroy();
    endedResolve(err);
  }
  sock.on('close', () => finish(new Mp2pBridgeError('MP2P_RTSP', 'camera closed the RTSP connection')));
  sock.on('error', (err) => finish(err instanceof Mp2pBridgeError ? err : new Mp2pBridgeError('MP2P_RTSP', err.message)));
  const describe = async (): Promise<RtspResponse> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await withTimeout(rtsp.request('DESCRIBE', rtspUrl, { Accept: 'application/sdp' }), timeoutMs, 'DESCRIBE');
      } catch (err) {
        if (attempt >= DESCRIBE_ATTEMPTS || !(err instanceof Mp2pBridgeError) || err.status === null || err.status < 500) throw err;
        await new Promise((r) => setTimeout(r, DESCRIBE_RETRY_MS));
        if (closed) throw new Mp2pBridgeError('MP2P_RTSP', 'camera closed the RTSP connection');
      }
    }
  };
  try {
    const described = await describe();
    const media = findMp2p(described.body, described.headers.get('content-base') ?? rtspUrl);
    if (!media) throw new Mp2pBridgeError('MP2P_NO_STREAM', `${url.host}${url.pathname} has no MP2P/90000 stream`);
    const setup = await withTimeout(rtsp.request('SETUP', media.control, { Transport: 'RTP/AVP/TCP;unicast;interleaved=0-1' }), timeoutMs, 'SETUP');
    channel = Number(/interleaved=(\d+)/.exec(setup.headers.get('transport') ?? '')?.[1] ?? 0);
    await withTimeout(rtsp.request('PLAY', rtspUrl, { Range: 'npt=0.000-' }), timeoutMs, 'PLAY');
  } catch (err) {
    finish(err as Error);
    throw err;
  }
  return {
    get lostPackets() {
      return lost;
    },
    ended,
    pause: () => void sock.pause(),
    resume: () => void sock.resume(),
    close: () => finish(null),
  };
}
