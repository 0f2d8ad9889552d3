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
 * typed errors keep their own names and codes); the kinds are below.
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
  private readonly waiting = new Map<number, (r: RtspResponse) => void>();
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
      this.onFrame(this.carry[1]!, this.carry.subarray(4, need));
    }
    return at;
  }

  /**
   * Gathers a text message from `chunk` at `at` and parses what is whole; returns where
   * reading goes on. Text is copied (a few answers per session). Interleaved data after
   * a message is a suffix of this read (the message ended in it: an earlier read would
   * have parsed it otherwise), so it goes back to the frame path from there.
   */
  private pushText(chunk: Buffer, at: number): number {
    this.text = Buffer.concat([this.text, chunk.subarray(at)]);
    this.parseText();
    if (this.text.length === 0 || this.text[0] !== 0x24) return chunk.length;
    const back = chunk.length - this.text.length;
    this.text = Buffer.alloc(0);
    return back;
  }

  /** Parses the whole text messages at the start of `text`. */
  private parseText(): void {
    while (this.text.length > 0 && this.text[0] !== 0x24) {
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
 */
export class RtspConnection {
  private cseq = 0;
  session = '';
  timeoutS = 60;
  private challenge: Challenge | null = null;
  private nc = 0;
  constructor(
    readonly sock: Socket,
    private readonly reader: RtspReader,
    private readonly cred: Credentials | null,
    private readonly host: string,
    private readonly fail: MakeRtspError,
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

/** Connects to the camera of `url`; `onFrame` gets each interleaved frame (a view valid for the call). */
export function openRtsp(url: URL, timeoutMs: number, onFrame: (ch: number, p: Buffer) => void, fail: MakeRtspError): Promise<RtspConnection> {
  return new Promise((resolve, reject) => {
    let reader: RtspReader | null = null;
    const buffer = Buffer.allocUnsafeSlow(READ_BYTES);
    const sock: Socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 554),
      onread: {
        buffer,
        callback: (n: number, buf: Uint8Array) => {
          try {
            reader?.push((buf as Buffer).subarray(0, n));
          } catch (err) {
            sock.destroy(err as Error);
          }
          return true; // false would pause the socket: pause() is the owner's, for back-pressure
        },
      },
    });
    reader = new RtspReader(onFrame, fail);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(fail('TIMEOUT', `no connection to ${url.host} within ${timeoutMs} ms`, null));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(new RtspConnection(sock, reader, urlCredentials(url), url.host, fail));
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(fail('CONNECT', `${url.host}: ${err.message}`, null));
    });
  });
}

export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), ms)))]).finally(() => clearTimeout(timer));
}

/** Two UDP sockets on an even port and the next (RTP, RTCP), any interface. */
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
  throw fail('CONNECT', 'no pair of local UDP ports for RTP and RTCP', null);
}
