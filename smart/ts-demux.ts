/**
 * A small MPEG transport stream reader: PAT → PMT → one PES per elementary stream,
 * with PTS/DTS. It exists for the smart stream: ffmpeg copies a camera's data tracks
 * into MPEG-TS (stream type 0x06, one PES per packet, timestamps kept), and this turns
 * the bytes back into packets with their boundaries and times.
 *
 * Invariants:
 * - Input may be cut anywhere; at most 187 bytes are carried to the next push.
 * - A PES is emitted only whole: when its declared length is reached, or (length 0,
 *   as for video) when the next PES of that PID starts. A PES cut by a continuity
 *   counter gap, a transport error or a declared length that is never reached is
 *   dropped and counted as `truncatedPes`; nothing partial is ever emitted.
 * - Timestamps are unwrapped (33-bit PTS wraps every 26.5 h) per PID against the
 *   previous one, so they keep increasing over a long session.
 * Bad bytes never throw: they are skipped and counted, the caller logs.
 */

export const TS_PACKET = 188;
const SYNC = 0x47;
const WRAP = 2 ** 33;
/** A PES larger than this is not a metadata packet (and not a sane video frame either). */
const MAX_PES_BYTES = 8 * 1024 * 1024;

export interface PesPacket {
  pid: number;
  /** Stream type from the PMT (0x06 private data, 0x15 metadata, 0x1B H.264…). */
  streamType: number;
  /** Registration descriptor of the stream in the PMT, e.g. 'KLVA' (absent if none). */
  registration?: string;
  streamId: number;
  /** 90 kHz, unwrapped; absent when the PES carries none. */
  pts?: number;
  dts?: number;
  payload: Buffer;
}

export type TsSkipReason = 'truncatedPes' | 'syncLost' | 'badSection';

export interface TsDemuxHandlers {
  onPes(pes: PesPacket): void;
  /**
   * The header of a PES as soon as its first TS packet arrives (before its payload is
   * complete): what a caller needs when only the timestamps of a stream matter (the
   * video's, whose unbounded PES completes only when the next one starts).
   */
  onPesStart?(pes: Omit<PesPacket, 'payload'>): void;
  /** False for streams whose payload is not wanted (only onPesStart is called for them). */
  wantsPayload?(streamType: number): boolean;
  onSkip?(reason: TsSkipReason, detail: string): void;
}

interface EsState {
  streamType: number;
  registration?: string;
  parts: Buffer[];
  bytes: number;
  /** Declared PES length including the 6-byte start (0: unbounded). */
  expected: number;
  nextCc: number;
  lastTs: number | null;
}

export class TsDemuxer {
  private rest: Buffer = Buffer.alloc(0);
  private pmtPid: number | null = null;
  private readonly es = new Map<number, EsState>();
  readonly counters: Record<TsSkipReason, number> = { truncatedPes: 0, syncLost: 0, badSection: 0 };

  constructor(private readonly handlers: TsDemuxHandlers) {}

  push(chunk: Buffer): void {
    let buf = this.rest.length > 0 ? Buffer.concat([this.rest, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= TS_PACKET) {
      if (buf[at] !== SYNC) {
        const next = buf.indexOf(SYNC, at + 1);
        this.skip('syncLost', `no sync byte at ${at}`);
        if (next < 0) {
          at = buf.length;
          break;
        }
        at = next;
        continue;
      }
      this.packet(buf.subarray(at, at + TS_PACKET));
      at += TS_PACKET;
    }
    this.rest = Buffer.from(buf.subarray(at));
    buf = Buffer.alloc(0);
  }

  /** End of input: a PES still open is emitted if it is complete by its own length. */
  end(): void {
    for (const [pid, st] of this.es) this.finish(pid, st, true);
    this.rest = Buffer.alloc(0);
  }

  private skip(reason: TsSkipReason, detail: string): void {
    this.counters[reason]++;
    this.handlers.onSkip?.(reason, detail);
  }

  private packet(p: Buffer): void {
    const tei = (p[1]! & 0x80) !== 0;
    const pusi = (p[1]! & 0x40) !== 0;
    const pid = ((p[1]! & 0x1f) << 8) | p[2]!;
    const afc = (p[3]! >> 4) & 3;
    const cc = p[3]! & 0x0f;
    if (pid === 0x1fff) return; // null packet
    let off = 4;
    if (afc & 2) off += 1 + p[4]!;
    const hasPayload = (afc & 1) !== 0 && off < TS_PACKET;
    const st = this.es.get(pid);
    if (tei) {
      if (st && st.parts.length > 0) this.drop(st, 'transport error indicator');
      return;
    }
    if (!hasPayload) return;
    const payload = p.subarray(off);
    if (pid === 0) return this.pat(payload, pusi);
    if (pid === this.pmtPid) return this.pmt(payload, pusi);
    if (!st) return; // not (yet) announced by a PMT
    const ccOk = st.nextCc < 0 || cc === st.nextCc;
    const duplicate = st.nextCc >= 0 && cc === ((st.nextCc + 15) & 0x0f) && !pusi;
    if (duplicate) return; // a repeated packet (allowed once by the standard)
    st.nextCc = (cc + 1) & 0x0f;
    if (pusi) {
      this.finish(pid, st, false);
      st.parts = [Buffer.from(payload)];
      st.bytes = payload.length;
      st.expected = payload.length >= 6 && payload[0] === 0 && payload[1] === 0 && payload[2] === 1 ? ((payload[4]! << 8) | payload[5]!) + 6 : 0;
      if (st.expected === 6) st.expected = 0; // length 0 means unbounded
      if (this.handlers.onPesStart) {
        const head = parsePes(payload);
        if (head) {
          // Peek without unwrapping state: the emitted PES updates it.
          const pts = head.pts === undefined ? undefined : unwrap(head.pts, st.lastTs);
          const dts = head.dts === undefined ? undefined : unwrap(head.dts, st.lastTs);
          this.handlers.onPesStart({
            pid,
            streamType: st.streamType,
            ...(st.registration !== undefined ? { registration: st.registration } : {}),
            streamId: head.streamId,
            ...(pts !== undefined ? { pts } : {}),
            ...(dts !== undefined ? { dts } : {}),
          });
        }
      }
      if (this.handlers.wantsPayload?.(st.streamType) === false) {
        st.parts = [];
        st.bytes = 0;
        return;
      }
    } else {
      if (st.parts.length === 0) return; // middle of a PES we did not see start
      if (!ccOk) return this.drop(st, `continuity gap on PID ${pid}`);
      st.parts.push(Buffer.from(payload));
      st.bytes += payload.length;
      if (st.bytes > MAX_PES_BYTES) return this.drop(st, `PES over ${MAX_PES_BYTES} bytes`);
    }
    if (st.expected > 0 && st.bytes >= st.expected) this.finish(pid, st, true);
  }

  private drop(st: EsState, why: string): void {
    st.parts = [];
    st.bytes = 0;
    this.skip('truncatedPes', why);
  }

  /** Emits the PES collected on `pid`; `final` means no more bytes can come for it. */
  private finish(pid: number, st: EsState, final: boolean): void {
    if (st.parts.length === 0) return;
    const whole = st.parts.length === 1 ? st.parts[0]! : Buffer.concat(st.parts);
    st.parts = [];
    st.bytes = 0;
    if (st.expected > 0 && whole.length < st.expected) {
      return this.skip('truncatedPes', `PES on PID ${pid}: ${whole.length} of ${st.expected} bytes`);
    }
    if (st.expected === 0 && !final && whole.length < 9) return this.skip('truncatedPes', `PES on PID ${pid} too short`);
    const pes = parsePes(st.expected > 0 ? whole.subarray(0, st.expected) : whole);
    if (!pes) return this.skip('truncatedPes', `bad PES header on PID ${pid}`);
    if (pes.pts !== undefined) pes.pts = st.lastTs = unwrap(pes.pts, st.lastTs);
    if (pes.dts !== undefined) pes.dts = unwrap(pes.dts, st.lastTs);
    this.handlers.onPes({
      pid,
      streamType: st.streamType,
      ...(st.registration !== undefined ? { registration: st.registration } : {}),
      streamId: pes.streamId,
      ...(pes.pts !== undefined ? { pts: pes.pts } : {}),
      ...(pes.dts !== undefined ? { dts: pes.dts } : {}),
      payload: pes.payload,
    });
  }

  /** One PSI section starting in this packet (ffmpeg's PAT/PMT fit in one). */
  private section(payload: Buffer, pusi: boolean, tableId: number): Buffer | null {
    if (!pusi) return null;
    const pointer = payload[0]!;
    const s = payload.subarray(1 + pointer);
    if (s.length < 12 || s[0] !== tableId) {
      this.skip('badSection', `table ${tableId} expected`);
      return null;
    }
    const len = ((s[1]! & 0x0f) << 8) | s[2]!;
    if (3 + len > s.length || len < 9) {
      this.skip('badSection', `section of ${len} bytes does not fit one packet`);
      return null;
    }
    return s.subarray(0, 3 + len - 4); // without the CRC
  }

  private pat(payload: Buffer, pusi: boolean): void {
    const s = this.section(payload, pusi, 0x00);
    if (!s) return;
    for (let i = 8; i + 4 <= s.length; i += 4) {
      const program = (s[i]! << 8) | s[i + 1]!;
      const pid = ((s[i + 2]! & 0x1f) << 8) | s[i + 3]!;
      if (program !== 0) {
        this.pmtPid = pid;
        return;
      }
    }
  }

  private pmt(payload: Buffer, pusi: boolean): void {
    const s = this.section(payload, pusi, 0x02);
    if (!s) return;
    const infoLen = ((s[10]! & 0x0f) << 8) | s[11]!;
    let i = 12 + infoLen;
    while (i + 5 <= s.length) {
      const streamType = s[i]!;
      const pid = ((s[i + 1]! & 0x1f) << 8) | s[i + 2]!;
      const esInfoLen = ((s[i + 3]! & 0x0f) << 8) | s[i + 4]!;
      let registration: string | undefined;
      for (let d = i + 5; d + 2 <= i + 5 + esInfoLen && d + 2 <= s.length; d += 2 + s[d + 1]!) {
        if (s[d] === 0x05 && s[d + 1]! >= 4 && d + 6 <= s.length) registration = s.subarray(d + 2, d + 6).toString('latin1');
      }
      const known = this.es.get(pid);
      if (!known || known.streamType !== streamType) {
        this.es.set(pid, { streamType, ...(registration !== undefined ? { registration } : {}), parts: [], bytes: 0, expected: 0, nextCc: -1, lastTs: null });
      }
      i += 5 + esInfoLen;
    }
  }
}

interface ParsedPes {
  streamId: number;
  pts?: number;
  dts?: number;
  payload: Buffer;
}

/** Stream ids whose PES has no optional header (program stream map, padding, …). */
function hasNoHeader(id: number): boolean {
  return id === 0xbc || id === 0xbe || id === 0xbf || id === 0xf0 || id === 0xf1 || id === 0xff || id === 0xf2 || id === 0xf8;
}

export function parsePes(b: Buffer): ParsedPes | null {
  if (b.length < 6 || b[0] !== 0 || b[1] !== 0 || b[2] !== 1) return null;
  const streamId = b[3]!;
  if (hasNoHeader(streamId)) return { streamId, payload: b.subarray(6) };
  if (b.length < 9 || (b[6]! & 0xc0) !== 0x80) return null;
  const flags = b[7]!;
  const hdrLen = b[8]!;
  if (9 + hdrLen > b.length) return null;
  const out: ParsedPes = { streamId, payload: b.subarray(9 + hdrLen) };
  if (flags & 0x80) {
    if (hdrLen < 5) return null;
    out.pts = readTs(b, 9);
  }
  if ((flags & 0xc0) === 0xc0) {
    if (hdrLen < 10) return null;
    out.dts = readTs(b, 14);
  }
  return out;
}

function readTs(b: Buffer, at: number): number {
  // 33 bits spread over 5 bytes with marker bits; multiply, not shift (past 32 bits).
  return ((b[at]! >> 1) & 0x07) * 2 ** 30 + (b[at + 1]! << 22) + ((b[at + 2]! >> 1) << 15) + (b[at + 3]! << 7) + (b[at + 4]! >> 1);
}

/** The value congruent to `raw` mod 2^33 closest to `last`. */
export function unwrap(raw: number, last: number | null): number {
  if (last === null) return raw;
  const base = last - (((last % WRAP) + WRAP) % WRAP);
  let best = base + raw;
  for (const c of [best - WRAP, best + WRAP]) if (Math.abs(c - last) < Math.abs(best - last)) best = c;
  return best;
}

/** Video stream types in a PMT (MPEG-1/2, MPEG-4 part 2, H.264, H.265). */
export function isVideoStreamType(t: number): boolean {
  return t === 0x01 || t === 0x02 || t === 0x10 || t === 0x1b || t === 0x24;
}

/**
 * Writes TS packets around one PES (for tests and tools): PAT, PMT with the given
 * streams, then the PES on `pid` cut into 188-byte packets with adaptation stuffing.
 */
export class TsMuxer {
  private cc = new Map<number, number>();
  constructor(private readonly streams: { pid: number; streamType: number; registration?: string }[]) {}

  psi(): Buffer {
    const pat = Buffer.from([0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xe1, 0x00]); // program 1 → PMT PID 0x100
    const es: number[] = [];
    for (const s of this.streams) {
      const desc = s.registration ? [0x05, 4, ...Buffer.from(s.registration, 'latin1')] : [];
      es.push(s.streamType, 0xe0 | (s.pid >> 8), s.pid & 0xff, 0xf0, desc.length, ...desc);
    }
    const pmtBody = [0x02, 0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00, 0xe1, 0x00, 0xf0, 0x00, ...es];
    const len = pmtBody.length - 3 + 4;
    pmtBody[1] = 0xb0 | (len >> 8);
    pmtBody[2] = len & 0xff;
    const withCrc = (b: Buffer): Buffer => {
      const crc = Buffer.alloc(4);
      crc.writeUInt32BE(mpegCrc32(b));
      return Buffer.concat([Buffer.from([0]), b, crc]);
    };
    return Buffer.concat([this.packets(0, withCrc(pat)), this.packets(0x100, withCrc(Buffer.from(pmtBody)))]);
  }

  /** A PES (private stream 1 style header with PTS, optional DTS) on `pid`. */
  pes(pid: number, payload: Buffer, pts: number, opts: { dts?: number; streamId?: number; unbounded?: boolean } = {}): Buffer {
    const hasDts = opts.dts !== undefined;
    const hdr = Buffer.alloc(hasDts ? 10 : 5);
    writeTs(hdr, 0, pts, hasDts ? 0x3 : 0x2);
    if (hasDts) writeTs(hdr, 5, opts.dts!, 0x1);
    const len = opts.unbounded ? 0 : 3 + hdr.length + payload.length;
    const head = Buffer.from([0, 0, 1, opts.streamId ?? 0xfc, len >> 8, len & 0xff, 0x80, hasDts ? 0xc0 : 0x80, hdr.length]);
    return this.packets(pid, Buffer.concat([head, hdr, payload]));
  }

  private packets(pid: number, data: Buffer): Buffer {
    const out: Buffer[] = [];
    for (let at = 0, first = true; at < data.length || first; first = false) {
      const cc = this.cc.get(pid) ?? 0;
      this.cc.set(pid, (cc + 1) & 0x0f);
      const room = TS_PACKET - 4;
      const take = Math.min(room, data.length - at);
      const p = Buffer.alloc(TS_PACKET, 0xff);
      p[0] = SYNC;
      p[1] = (first ? 0x40 : 0) | (pid >> 8);
      p[2] = pid & 0xff;
      if (take < room) {
        const stuff = room - take; // adaptation field fills the rest
        p[3] = 0x30 | cc;
        p[4] = stuff - 1;
        if (stuff > 1) p[5] = 0x00;
        data.copy(p, 4 + stuff, at, at + take);
      } else {
        p[3] = 0x10 | cc;
        data.copy(p, 4, at, at + take);
      }
      at += take;
      out.push(p);
    }
    return Buffer.concat(out);
  }
}

/** CRC-32/MPEG-2 of a PSI section (polynomial 0x04C11DB7, not reflected). */
export function mpegCrc32(b: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of b) {
    crc ^= byte << 24;
    for (let i = 0; i < 8; i++) crc = crc & 0x80000000 ? (crc << 1) ^ 0x04c11db7 : crc << 1;
  }
  return crc >>> 0;
}

function writeTs(b: Buffer, at: number, ts: number, prefix: number): void {
  const v = ((ts % WRAP) + WRAP) % WRAP;
  const hi = Math.floor(v / 2 ** 30);
  const mid = Math.floor(v / 2 ** 15) & 0x7fff;
  const lo = v & 0x7fff;
  b[at] = (prefix << 4) | (hi << 1) | 1;
  b[at + 1] = mid >> 7;
  b[at + 2] = ((mid & 0x7f) << 1) | 1;
  b[at + 3] = lo >> 7;
  b[at + 4] = ((lo & 0x7f) << 1) | 1;
}
