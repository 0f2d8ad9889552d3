/**
 * One RTSP connection to a camera, as our own clients use it (rtsp/rtp-session.ts for
 * the native and MP2P ingests): requests with CSeq, Session and the login, responses
 * matched to their request, and RTP/RTCP interleaved in the same connection (`$`
 * framing, RFC 2326 §10.12) handed to the owner as they arrive.
 *
 * Login: a 401 to any request is answered once with Basic or Digest (MD5, `qop=auth`;
 * rtsp/rtsp-auth.ts) from the URL's percent-encoded user info; once challenged, every
 * later request carries its `Authorization` (Digest with a counted `nc`), and a new
 * challenge (a stale nonce) is answered again. A 401 to the answer is a refusal (AUTH),
 * whose message names user and host, never the password.
 *
 * Memory: the socket is read into one reused buffer per connection (net `onread`), so
 * receiving makes no new Buffer memory per read. An interleaved frame lying within one
 * read is handed on as a view of that buffer: **valid only during the `onFrame` call**;
 * a holder copies. A frame cut by the end of a read is completed in a fixed carry
 * buffer (at most 4 + 65535 bytes). RTSP text messages (rare) are gathered apart.
 *
 * Errors are made by the owner's `fail` (the MP2P bridge's and the native ingest's
 * typed errors keep their own names and codes); the kinds are below. When the camera
 * closes the connection (or the socket fails), every request waiting for an answer fails
 * at once (CONNECT), not after its timeout. The owner's AbortSignal ends a connect at
 * once with an RtspAbortError (not a camera failure: no kind of its own).
 *
 * Resynchronisation: bytes at a message boundary that are neither `$` nor the start of
 * an RTSP message (a camera's stray bytes between frames) are skipped up to the next `$`
 * or `RTSP/1.0 ` and counted (`skippedBytes`); MAX_GARBAGE_BYTES of them in a row is not
 * an RTSP camera at all (RTSP).
 */
import { connect, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { authorization, pickChallenge, refusalReason, urlCredentials, type Challenge, type Credentials } from './rtsp-auth.ts';

/** What went wrong, for the owner's typed error. */
export type RtspFailureKind = 'CONNECT' | 'RTSP' | 'AUTH' | 'TIMEOUT' | 'TRANSPORT' | 'NO_STREAM';
export type MakeRtspError = (kind: RtspFailureKind, message: string, status: number | null) => Error;

const MAX_MESSAGE_BYTES = 256 * 1024;
/** One read of the camera's socket; also the largest read handed on without a carry. */
const READ_BYTES = 64 * 1024;
/** Stray bytes skipped in a row past this: the peer does not speak RTSP (a resync would never come). */
const MAX_GARBAGE_BYTES = 1024 * 1024;
/** A request line from the server (`OPTIONS rtsp://… RTSP/1.0`) longer than this is not one. */
const MAX_REQUEST_LINE = 4096;
const RESPONSE_START = Buffer.from('RTSP/1.0 ', 'latin1');
/**
 * UDP: what we ask the OS to buffer of a track's RTP. A keyframe of a 4K camera is
 * hundreds of packets in a burst; the default (about 200 KB on Linux) drops its tail
 * whenever the event loop is busy for a few ms. The OS caps it at its own limit.
 */
export const RTP_RECV_BUFFER_BYTES = 2 * 1024 * 1024;

/**
 * The owner aborted (its AbortSignal) while connecting or starting: not the camera's
 * failure, so not one of the owner's typed errors. Recognise it by class or by `code`.
 */
export class RtspAbortError extends Error {
  readonly code = 'RTSP_ABORTED';
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'AbortError';
  }
}

export function isRtspAbort(err: unknown): err is RtspAbortError {
  return err instanceof RtspAbortError;
}

/** Whether `text` starts an RTSP message (a status line or a request line); 'maybe' while too short to tell. */
export function messageStart(text: Buffer): 'yes' | 'no' | 'maybe' {
  const n = Math.min(text.length, RESPONSE_START.length);
  if (text.compare(RESPONSE_START, 0, n, 0, n) === 0) return n === RESPONSE_START.length ? 'yes' : 'maybe';
  const eol = text.indexOf('\r\n');
  if (eol < 0) {
    if (text.length > MAX_REQUEST_LINE) return 'no';
    // A request line cut by the end of a read: METHOD, then up to two words so far.
    return /^[A-Z][A-Z_]{0,31}(?: [\x21-\x7e]*(?: [\x21-\x7e]*)?)?$/.test(text.toString('latin1')) ? 'maybe' : 'no';
  }
  return eol <= MAX_REQUEST_LINE && /^[A-Z][A-Z_]{0,31} \S+ RTSP\/1\.0$/.test(text.toString('latin1', 0, eol)) ? 'yes' : 'no';
}

/** Where `text` may be in sync again after `from`: the next `$` or `RTSP/1.0 `; else how much of its end to keep (a cut `RTSP/1.0 `). */
function nextSync(text: Buffer, from: number): number {
  const dollar = text.indexOf(0x24, from);
  const response = text.indexOf(RESPONSE_START, from);
  if (dollar >= 0 || response >= 0) return dollar < 0 ? response : response < 0 ? dollar : Math.min(dollar, response);
  for (let keep = Math.min(RESPONSE_START.length - 1, text.length - from); keep > 0; keep--) {
    const at = text.length - keep;
    if (text.compare(RESPONSE_START, 0, keep, at, text.length) === 0) return at;
  }
  return text.length;
}

export interface RtspResponse {
  status: number;
  headers: Map<string, string>;
  /** Every `WWW-Authenticate` value (a camera may offer Basic and Digest). */
  challenges: string[];
  body: string;
}

/**
 * Reads RTSP responses and `$`-framed interleaved data. A response goes to the request
 * of its CSeq (one that timed out is forgotten), else, for cameras that echo no CSeq or
 * a wrong one, to the oldest waiting request.
 */
export class RtspReader {
  /** A text message being gathered (RTSP headers and body), else empty. */
  private text: Buffer = Buffer.alloc(0);
  /** An interleaved frame cut by the end of a read: its bytes so far and its full length. */
  private readonly carry = Buffer.allocUnsafeSlow(4 + 0xffff);
  private carried = 0;
  private carryNeed = 0;
  private readonly waiting = new Map<number, { resolve: (r: RtspResponse) => void; reject: (e: Error) => void }>();
  /** Why the connection ended (set once): later requests fail with it at once. */
  private endedWith: Error | null = null;
  /** Stray bytes skipped to resynchronise, in all, and in a row. */
  skippedBytes = 0;
  private garbageRun = 0;
  constructor(
    private readonly onFrame: (channel: number, payload: Buffer) => void,
    private readonly fail: MakeRtspError,
  ) {}

  /** One read; `chunk` may be reused by the caller once this returns. */
  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.carryNeed > 0 || this.carried > 0) {
        at = this.fillCarry(chunk, at);
        continue;
      }
      if (this.text.length > 0 || chunk[at] !== 0x24) {
        at = this.pushText(chunk, at);
        continue;
      }
      // An interleaved frame: whole in this read, or carried.
      if (chunk.length - at >= 4) {
        const len = chunk.readUInt16BE(at + 2);
        if (chunk.length - at >= 4 + len) {
          this.garbageRun = 0;
          this.onFrame(chunk[at + 1]!, chunk.subarray(at + 4, at + 4 + len));
          at += 4 + len;
          continue;
        }
        this.carryNeed = 4 + len;
      }
      const n = chunk.length - at;
      chunk.copy(this.carry, 0, at, chunk.length);
      this.carried = n;
      at = chunk.length;
    }
  }

  /** Completes a carried frame from `chunk` at `at`; returns where reading goes on. */
  private fillCarry(chunk: Buffer, at: number): number {
    if (this.carryNeed === 0) {
      // The 4-byte header itself was cut.
      const take = Math.min(4 - this.carried, chunk.length - at);
      chunk.copy(this.carry, this.carried, at, at + take);
      this.carried += take;
      at += take;
      if (this.carried < 4) return at;
      this.carryNeed = 4 + this.carry.readUInt16BE(2);
    }
    const take = Math.min(this.carryNeed - this.carried, chunk.length - at);
    chunk.copy(this.carry, this.carried, at, at + take);
    this.carried += take;
    at += take;
    if (this.carried === this.carryNeed) {
      const need = this.carryNeed;
      this.carried = 0;
      this.carryNeed = 0;
      this.garbageRun = 0;
      this.onFrame(this.carry[1]!, this.carry.subarray(4, need));
    }
    return at;
  }

  /**
   * Gathers a text message from `chunk` at `at` and parses what is whole; returns where
   * reading goes on. Text is copied (a few answers per session). Interleaved data after
   * a message is a suffix of this read (the message ended in it: an earlier read would
   * have parsed it otherwise), so it goes back to the frame path from there; unless a
   * resync found the `$` in bytes kept from an earlier read, read then from the copy.
   */
  private pushText(chunk: Buffer, at: number): number {
    const fresh = chunk.length - at;
    this.text = Buffer.concat([this.text, chunk.subarray(at)]);
    this.parseText();
    if (this.text.length === 0 || this.text[0] !== 0x24) return chunk.length;
    const rest = this.text;
    this.text = Buffer.alloc(0);
    if (rest.length <= fresh) return chunk.length - rest.length;
    this.push(rest);
    return chunk.length;
  }

  /** Skips the stray bytes at the start of `text` up to where it may be in sync again. */
  private skipGarbage(): void {
    const to = nextSync(this.text, 1);
    this.text = this.text.subarray(to);
    this.skippedBytes += to;
    this.garbageRun += to;
    if (this.garbageRun > MAX_GARBAGE_BYTES) throw this.fail('RTSP', `${this.garbageRun} bytes in a row that are neither RTSP nor interleaved data`, null);
  }

  /** Parses the whole text messages at the start of `text`. */
  private parseText(): void {
    while (this.text.length > 0 && this.text[0] !== 0x24) {
      const start = messageStart(this.text);
      if (start === 'maybe') return;
      if (start === 'no') {
        this.skipGarbage();
        continue;
      }
      const end = this.text.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.text.length > MAX_MESSAGE_BYTES) throw this.fail('RTSP', 'RTSP header too long', null);
        return;
      }
      const lines = this.text.toString('latin1', 0, end).split('\r\n');
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
      if (!Number.isFinite(bodyLen) || bodyLen < 0 || bodyLen > MAX_MESSAGE_BYTES) throw this.fail('RTSP', `RTSP body of ${bodyLen} bytes`, null);
      if (this.text.length < end + 4 + bodyLen) return;
      const m = /^RTSP\/1\.0 (\d{3})/.exec(lines[0] ?? '');
      const body = this.text.toString('utf8', end + 4, end + 4 + bodyLen);
      this.text = this.text.subarray(end + 4 + bodyLen);
      this.garbageRun = 0;
      if (!m) continue; // a request from the server (e.g. OPTIONS): ignored
      const cseq = Number(headers.get('cseq'));
      const key = this.waiting.has(cseq) ? cseq : this.waiting.keys().next().value;
      if (key === undefined) continue; // the answer to a request no one waits for any more
      const w = this.waiting.get(key)!;
      this.waiting.delete(key);
      w.resolve({ status: Number(m[1]), headers, challenges, body });
    }
  }

  next(cseq: number): Promise<RtspResponse> {
    if (this.endedWith) return Promise.reject(this.endedWith);
    return new Promise((resolve, reject) => this.waiting.set(cseq, { resolve, reject }));
  }

  /** The connection ended: every waiting request fails with `err` now (no answer can come), and every later one. */
  end(err: Error): void {
    this.endedWith ??= err;
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) w.reject(this.endedWith);
  }

  forget(cseq: number): void {
    this.waiting.delete(cseq);
  }
}

/** The `Session` id and its timeout (seconds; RFC 2326 default 60) from a response. */
export function parseSession(value: string): { id: string; timeoutS: number } {
  const [id = '', ...params] = value.split(';');
  const t = params.map((p) => /^\s*timeout\s*=\s*(\d+)/i.exec(p)?.[1]).find((x) => x !== undefined);
  return { id: id.trim(), timeoutS: t !== undefined && Number(t) > 0 ? Number(t) : 60 };
}

/** The SETUP `Transport` header asking for `transport` (`channel`: the first interleaved channel, TCP; `rtpPort`: the local even port, UDP). */
export function transportHeader(transport: 'tcp' | 'udp', rtpPort = 0, channel = 0): string {
  return transport === 'tcp' ? `RTP/AVP/TCP;unicast;interleaved=${channel}-${channel + 1}` : `RTP/AVP;unicast;client_port=${rtpPort}-${rtpPort + 1}`;
}

/** The URL without user:password (never sent in a request line: the login is in `Authorization`). */
export function requestUrl(url: URL): string {
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return u.href;
}

/**
 * One RTSP connection's requests: CSeq, Session, and the login. Once a camera has
 * challenged, every request carries an `Authorization` for it (Digest: nc counts up);
 * a 401 is answered once per request with the challenge it carries.
 *
 * The end of the connection (the camera closed it, the socket failed, the reader found
 * it is not RTSP, or the owner's `end()`) is one event: waiting requests fail with its
 * error at once, the socket is destroyed, and `onEnd` listeners hear it.
 */
export class RtspConnection {
  private cseq = 0;
  session = '';
  timeoutS = 60;
  private challenge: Challenge | null = null;
  private nc = 0;
  private endedWith: Error | null = null;
  private readonly endListeners: ((err: Error) => void)[] = [];
  constructor(
    readonly sock: Socket,
    private readonly reader: RtspReader,
    private readonly cred: Credentials | null,
    private readonly host: string,
    private readonly fail: MakeRtspError,
  ) {
    let sockError: Error | null = null;
    sock.on('error', (err) => (sockError ??= err));
    sock.on('close', () => this.end(this.fail('CONNECT', sockError ? `${host}: ${sockError.message}` : `${host} closed the RTSP connection`, null)));
  }

  /** Why the connection ended; null while it is open. */
  get ended(): Error | null {
    return this.endedWith;
  }

  /** Stray bytes skipped between messages and frames (a camera's garbage). */
  get skippedBytes(): number {
    return this.reader.skippedBytes;
  }

  /** Ends the connection with `err` (the first reason wins): requests waiting fail with it, the socket is destroyed. */
  end(err: Error): void {
    if (this.endedWith) return;
    this.endedWith = err;
    this.reader.end(err);
    this.sock.destroy();
    for (const l of this.endListeners.splice(0)) l(err);
  }

  /** `listener` hears the connection end, at once if it has. */
  onEnd(listener: (err: Error) => void): void {
    if (this.endedWith) listener(this.endedWith);
    else this.endListeners.push(listener);
  }

  private authorize(method: string, url: string): Record<string, string> {
    if (!this.challenge || !this.cred) return {};
    return { Authorization: authorization(this.challenge, this.cred, method, url, ++this.nc) };
  }

  private send(method: string, url: string, extra: Record<string, string>): number {
    const cseq = ++this.cseq;
    if (this.endedWith) return cseq; // nothing to write to: the request fails with the reason
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
      return await withTimeout(reply, timeoutMs, () => this.fail('TIMEOUT', `${method}: no answer within ${timeoutMs} ms`, null));
    } finally {
      this.reader.forget(cseq);
    }
  }

  /** The camera's 200 answer; any other fails typed (the status kept). */
  async request(method: string, url: string, timeoutMs: number, extra: Record<string, string> = {}): Promise<RtspResponse> {
    let r = await this.exchange(method, url, extra, timeoutMs);
    if (r.status === 401) {
      const ch = pickChallenge(r.challenges);
      if (!ch || !this.cred) throw this.fail('AUTH', refusalReason(this.host, method, this.cred, ch, r.challenges), 401);
      this.challenge = ch;
      this.nc = 0;
      r = await this.exchange(method, url, extra, timeoutMs);
      if (r.status === 401) throw this.fail('AUTH', refusalReason(this.host, method, this.cred, ch, r.challenges), 401);
    }
    if (r.status !== 200) throw this.fail(r.status === 461 ? 'TRANSPORT' : 'RTSP', `${method} ${url}: ${r.status}`, r.status);
    const s = r.headers.get('session');
    if (s) ({ id: this.session, timeoutS: this.timeoutS } = parseSession(s));
    return r;
  }

  /** A request whose answer is not waited for (TEARDOWN on the way out). */
  fire(method: string, url: string): void {
    this.send(method, url, {});
  }
}

export interface OpenRtspOptions {
  /** Aborting it while connecting destroys the socket at once and rejects with an RtspAbortError. */
  signal?: AbortSignal;
}

/** The owner's abort as our error (its reason kept as the cause). */
export function abortError(host: string, signal: AbortSignal): RtspAbortError {
  return new RtspAbortError(`${host}: aborted by its owner`, signal.reason);
}

/**
 * Connects to the camera of `url`; `onFrame` gets each interleaved frame (a view valid
 * for the call). The signal only covers the connect: once connected, `end()` is the owner's.
 */
export function openRtsp(
  url: URL,
  timeoutMs: number,
  onFrame: (ch: number, p: Buffer) => void,
  fail: MakeRtspError,
  opts: OpenRtspOptions = {},
): Promise<RtspConnection> {
  const { signal } = opts;
  if (signal?.aborted) return Promise.reject(abortError(url.host, signal));
  return new Promise((resolve, reject) => {
    let conn: RtspConnection | null = null;
    const reader = new RtspReader(onFrame, fail);
    const buffer = Buffer.allocUnsafeSlow(READ_BYTES);
    const sock: Socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 554),
      onread: {
        buffer,
        callback: (n: number, buf: Uint8Array) => {
          try {
            reader.push((buf as Buffer).subarray(0, n));
          } catch (err) {
            // Now, not at the socket's close: a PLAY answered in this same read must not start the session.
            if (conn) conn.end(err as Error);
            else sock.destroy(err as Error);
          }
          return true; // false would pause the socket: pause() is the owner's, for back-pressure
        },
      },
    });
    const settle = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      settle();
      sock.destroy();
      reject(abortError(url.host, signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      settle();
      sock.destroy();
      reject(fail('TIMEOUT', `no connection to ${url.host} within ${timeoutMs} ms`, null));
    }, timeoutMs);
    sock.once('connect', () => {
      settle();
      conn = new RtspConnection(sock, reader, urlCredentials(url), url.host, fail);
      resolve(conn);
    });
    sock.once('error', (err) => {
      if (conn) return; // the connection's own listener has it
      settle();
      reject(fail('CONNECT', `${url.host}: ${err.message}`, null));
    });
  });
}

export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), ms)))]).finally(() => clearTimeout(timer));
}

/** Two UDP sockets on an even port and the next (RTP, RTCP), any interface; the RTP one asks for a large receive buffer. */
export async function bindRtpPair(family: 'udp4' | 'udp6', fail: MakeRtspError): Promise<{ rtp: UdpSocket; rtcp: UdpSocket; port: number }> {
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
      closeDgram(rtp);
      continue;
    }
    const port = rtp.address().port;
    const rtcp = createSocket(family);
    if (port % 2 === 0 && port < 65535 && (await bind(rtcp, port + 1))) {
      enlargeReceiveBuffer(rtp);
      return { rtp, rtcp, port };
    }
    closeDgram(rtp);
    closeDgram(rtcp);
  }
  throw fail('CONNECT', 'no pair of local UDP ports for RTP and RTCP', null);
}

/** Asks for RTP_RECV_BUFFER_BYTES; the OS may cap it (Linux: net.core.rmem_max) or refuse: its default then. */
function enlargeReceiveBuffer(s: UdpSocket): void {
  try {
    if (s.getRecvBufferSize() < RTP_RECV_BUFFER_BYTES) s.setRecvBufferSize(RTP_RECV_BUFFER_BYTES);
  } catch {
    /* refused: the default buffer, as before */
  }
}

/** Closes a UDP socket once: a second close (or one never bound) throws ERR_SOCKET_DGRAM_NOT_RUNNING, which must not replace the error being handled. */
export function closeDgram(s: UdpSocket): void {
  try {
    s.close();
  } catch {
    /* already closed */
  }
}
