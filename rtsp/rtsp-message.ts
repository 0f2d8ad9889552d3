/**
 * RTSP 1.0 on one TCP connection, as bytes: a streaming parser that cuts the byte
 * stream into RTSP messages (requests or responses, with their body) and interleaved
 * binary frames (`$`, channel, 16-bit length, RTP/RTCP payload), and a serializer for
 * messages. Pure: no sockets. Used by the edge replay proxy (rtsp/rtsp-replay-proxy.ts).
 *
 * Invariants: a frame or message is emitted only when complete; bytes are never
 * reordered; a header block over MAX_HEADER_BYTES or a body over MAX_BODY_BYTES is a
 * protocol error (a peer speaking something else must not make us buffer forever).
 */

export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_BODY_BYTES = 1024 * 1024;

export interface RtspMessage {
  /** `DESCRIBE rtsp://… RTSP/1.0` or `RTSP/1.0 200 OK`. */
  startLine: string;
  /** Header lines in order, names as sent (lookups are case-insensitive). */
  headers: [string, string][];
  body: Buffer;
}

export type RtspItem = { kind: 'message'; message: RtspMessage } | { kind: 'frame'; channel: number; payload: Buffer; raw: Buffer };

export class RtspProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RtspProtocolError';
  }
}

/** Cuts an RTSP-over-TCP byte stream into messages and interleaved frames. */
export class RtspStreamParser {
  private buf: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns every item completed by them. Throws RtspProtocolError. */
  push(bytes: Buffer): RtspItem[] {
    this.buf = this.buf.length === 0 ? bytes : Buffer.concat([this.buf, bytes]);
    const out: RtspItem[] = [];
    for (;;) {
      const item = this.next();
      if (!item) break;
      out.push(item);
    }
    return out;
  }

  /** Bytes held waiting for the rest of an item. */
  get pending(): number {
    return this.buf.length;
  }

  private next(): RtspItem | null {
    if (this.buf.length === 0) return null;
    if (this.buf[0] === 0x24) {
      if (this.buf.length < 4) return null;
      const len = this.buf.readUInt16BE(2);
      if (this.buf.length < 4 + len) return null;
      const raw = this.buf.subarray(0, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      return { kind: 'frame', channel: raw[1]!, payload: raw.subarray(4), raw };
    }
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.buf.length > MAX_HEADER_BYTES) throw new RtspProtocolError(`no end of RTSP headers within ${MAX_HEADER_BYTES} bytes`);
      return null;
    }
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const startLine = lines.shift()!;
    if (!/^(RTSP\/1\.0 \d{3}\b|[A-Z_]+ \S+ RTSP\/1\.0$)/.test(startLine)) {
      throw new RtspProtocolError(`not an RTSP message: ${JSON.stringify(startLine.slice(0, 80))}`);
    }
    const headers: [string, string][] = [];
    for (const line of lines) {
      const i = line.indexOf(':');
      if (i <= 0) throw new RtspProtocolError(`bad RTSP header line ${JSON.stringify(line.slice(0, 80))}`);
      headers.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
    }
    const lenText = header({ startLine, headers, body: Buffer.alloc(0) }, 'content-length');
    const len = lenText === undefined ? 0 : Number(lenText);
    if (!Number.isInteger(len) || len < 0 || len > MAX_BODY_BYTES) throw new RtspProtocolError(`bad Content-Length ${JSON.stringify(lenText)}`);
    if (this.buf.length < end + 4 + len) return null;
    const body = Buffer.from(this.buf.subarray(end + 4, end + 4 + len));
    this.buf = this.buf.subarray(end + 4 + len);
    return { kind: 'message', message: { startLine, headers, body } };
  }
}

export function header(m: RtspMessage, name: string): string | undefined {
  const lower = name.toLowerCase();
  return m.headers.find(([n]) => n.toLowerCase() === lower)?.[1];
}

/** Sets (replacing every header of that name) or, with `undefined`, removes a header. */
export function setHeader(m: RtspMessage, name: string, value: string | undefined): void {
  const lower = name.toLowerCase();
  const at = m.headers.findIndex(([n]) => n.toLowerCase() === lower);
  m.headers = m.headers.filter(([n]) => n.toLowerCase() !== lower);
  if (value !== undefined) m.headers.splice(at < 0 ? m.headers.length : at, 0, [name, value]);
}

export function isResponse(m: RtspMessage): boolean {
  return m.startLine.startsWith('RTSP/');
}

/** Method and URL of a request. */
export function requestLine(m: RtspMessage): { method: string; url: string } {
  const [method = '', url = ''] = m.startLine.split(' ');
  return { method, url };
}

export function statusCode(m: RtspMessage): number {
  return Number(m.startLine.split(' ')[1]);
}

/** Serializes a message; Content-Length always matches the body. */
export function serialize(m: RtspMessage): Buffer {
  const headers = m.headers.filter(([n]) => n.toLowerCase() !== 'content-length');
  if (m.body.length > 0) headers.push(['Content-Length', String(m.body.length)]);
  const head = [m.startLine, ...headers.map(([n, v]) => `${n}: ${v}`), '', ''].join('\r\n');
  return Buffer.concat([Buffer.from(head, 'latin1'), m.body]);
}

/**
 * `Range: clock=<start>-<end>` (RFC 2326 absolute time, UTC) as epoch ms. Accepts
 * `YYYYMMDDThhmmss[.fff]Z`; an open end gives `endMs: null`. Null when not a clock range.
 */
export function parseClockRange(value: string): { startMs: number; endMs: number | null } | null {
  const m = /^\s*clock\s*=\s*(\d{8}T\d{6}(?:\.\d+)?Z)\s*-\s*(\d{8}T\d{6}(?:\.\d+)?Z)?\s*$/i.exec(value);
  if (!m) return null;
  const startMs = parseClockTime(m[1]!);
  const endMs = m[2] ? parseClockTime(m[2]) : null;
  return startMs === null ? null : { startMs, endMs };
}

function parseClockTime(s: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\.\d+)?Z$/i.exec(s);
  if (!m) return null;
  const ms = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) + Math.round(Number(m[7] ?? 0) * 1000);
  return Number.isFinite(ms) ? ms : null;
}

/** Epoch ms as an RFC 2326 clock time, `YYYYMMDDThhmmss.fffZ`. */
export function formatClockTime(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '');
}

/**
 * The ONVIF replay RTP header extension (profile 0xABAC, ONVIF Streaming spec 6.3):
 * the absolute UTC time of the packet as a 64-bit NTP timestamp. Epoch ms, or null when
 * the packet carries none (or is not RTP).
 */
export function onvifPacketTimeMs(rtp: Buffer): number | null {
  if (rtp.length < 12 || rtp[0]! >> 6 !== 2 || (rtp[0]! & 0x10) === 0) return null;
  const at = 12 + (rtp[0]! & 0x0f) * 4;
  if (rtp.length < at + 4 + 8 || rtp.readUInt16BE(at) !== 0xabac || rtp.readUInt16BE(at + 2) < 3) return null;
  const seconds = rtp.readUInt32BE(at + 4);
  const fraction = rtp.readUInt32BE(at + 8);
  return Math.round((seconds - NTP_UNIX_OFFSET_S) * 1000 + (fraction / 2 ** 32) * 1000);
}

/** Seconds from 1900-01-01 (NTP era 0) to 1970-01-01. */
export const NTP_UNIX_OFFSET_S = 2_208_988_800;
