/**
 * Incremental MPEG program stream reader for a live PS (an MP2P camera's bytes as they
 * arrive): frames the byte stream into packets and cuts it into GOPs, each starting
 * with the access unit of a video keyframe (IDR / IRAP), so that each GOP can be
 * demuxed alone (media/ps/ps-demux.ts) and turned into one fMP4 fragment
 * (media/ps/ps-live-fmp4.ts).
 *
 * Where a GOP is cut: at the start of the keyframe's access unit, found the way the
 * demuxer finds units (an access unit delimiter, or a parameter set, SEI or the first
 * slice of a picture after a slice), together with the pack header, system header and
 * PSM right before it when no other PES lies between. An access unit that starts
 * inside a PES (a muxer packing several units per PES) splits that PES in two: the
 * tail of the unit before stays in the old GOP without timestamps, the new GOP starts
 * with a PES that keeps the PTS/DTS (a PES timestamp belongs to the first unit that
 * starts in it).
 *
 * Start: everything before the first keyframe that comes with a PSM is skipped
 * (`skippedBytes`): a camera joined mid-GOP waits for the next I-frame, and the PSM
 * (repeated at I-frames) says what the audio is. A stream that never sends a PSM
 * starts at its MAX_KEYFRAMES_WITHOUT_PSM-th keyframe (video sniffed from its NAL
 * units; audio without a PSM entry cannot be told apart and is left out by the demuxer).
 *
 * Bounds: the reader holds at most the GOP being assembled plus one packet of input.
 * A GOP that grows past `maxGopBytes` is handed on at the start of the access unit
 * being assembled (`oversizedGops`); the GOP after it does not start with a keyframe.
 * A single access unit bigger than the bound is dropped with its GOP, and the reader
 * waits for the next keyframe.
 *
 * Bad input: bytes that are not a packet start are skipped to the next pack header
 * (`resyncBytes`). `discontinuity()` says input is missing (lost RTP packets): the
 * partial packet is dropped (`droppedBytes`) and reading resynchronises at the next
 * pack header; the GOP goes on with what arrived (its frames may show errors until the
 * next keyframe, as with any lossy camera link) and is flagged `damaged`.
 */
import { isAccessUnitDelimiter, isFirstSliceOfPicture, isRandomAccessNal, isSliceNal, type VideoCodec } from '../codec/annexb.ts';
import { opensUnit, parsePsm, sniffVideo } from './ps-demux.ts';
import { STREAM_TYPE } from './ps-mux.ts';

export interface PsGop {
  /** Program-stream bytes from the keyframe's access unit to the next keyframe's. */
  bytes: Buffer;
  /** Stream id → stream type in force where the GOP starts (PSMs seen before it included). */
  psm: Map<number, number>;
  /** The GOP starts with a keyframe (false only after an oversized GOP was handed on). */
  keyframe: boolean;
  /** Raw 33-bit DTS of the access unit after the GOP (the next GOP's first), when known. */
  nextDts: bigint | null;
  /** Why it ended: the next keyframe, the size bound, or the end of input. */
  end: 'keyframe' | 'size' | 'input';
  /** Input was missing inside this GOP (see discontinuity()). */
  damaged: boolean;
}

export interface PsGopReaderCounters {
  bytesIn: number;
  gops: number;
  /** Bytes passed over before the first keyframe with a PSM (or after a dropped GOP). */
  skippedBytes: number;
  /** Bytes that were not a packet start, skipped to the next pack header. */
  resyncBytes: number;
  /** Holes announced by discontinuity(). */
  discontinuities: number;
  /** Bytes of packets cut by a hole, dropped. */
  droppedBytes: number;
  /** GOPs handed on at the size bound before their end. */
  oversizedGops: number;
  /** GOPs dropped because a single access unit was over the size bound. */
  droppedGops: number;
  /** Keyframes passed over while waiting for a PSM. */
  keyframesWithoutPsm: number;
}

export interface PsGopReaderOptions {
  /** Largest GOP held (default 48 MiB). */
  maxGopBytes?: number;
}

export const DEFAULT_MAX_GOP_BYTES = 48 * 1024 * 1024;
/** Keyframes waited for a PSM before starting without one. */
export const MAX_KEYFRAMES_WITHOUT_PSM = 3;
/** Bytes of pack/system/PSM packets kept while waiting for the first video PES. */
const MAX_RUN_BYTES = 64 * 1024;
const PACK = Buffer.from([0, 0, 1, 0xba]);
const START3 = Buffer.from([0, 0, 1]);
const EMPTY = Buffer.alloc(0);
const TS_MOD = 2n ** 33n;

/** Input chunks not yet framed, read as one byte string. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.length += b.length;
  }

  /** The first `n` bytes as one buffer (merging chunks once when they span several). */
  peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const parts: Buffer[] = [first.subarray(this.head)];
    let have = parts[0]!.length;
    let k = 1;
    while (have < n) {
      const c = this.chunks[k++]!;
      parts.push(c);
      have += c.length;
    }
    const merged = Buffer.concat(parts, have);
    this.chunks.splice(0, k, merged);
    this.head = 0;
    return merged.subarray(0, n);
  }

  take(n: number): Buffer {
    const b = this.peek(n);
    this.skip(n);
    return b;
  }

  skip(n: number): void {
    this.length -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const left = c.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.length = 0;
  }
}

interface PesInfo {
  payloadStart: number;
  pts: bigint | null;
  dts: bigint | null;
}

function readTs(b: Buffer, p: number): bigint {
  return (BigInt((b[p]! >> 1) & 7) << 30n) | (BigInt(b.readUInt16BE(p + 1) >> 1) << 15n) | BigInt(b.readUInt16BE(p + 3) >> 1);
}

/** PES header of a whole packet (MPEG-2, or MPEG-1 as ffmpeg's `-f mpeg` writes); null when it does not parse. */
function pesInfo(pkt: Buffer): PesInfo | null {
  const body = 6;
  if (pkt.length <= body) return { payloadStart: pkt.length, pts: null, dts: null };
  if ((pkt[body]! & 0xc0) === 0x80) {
    if (pkt.length < body + 3) return null;
    const flags = pkt[body + 1]! >> 6;
    const hlen = pkt[body + 2]!;
    const start = body + 3 + hlen;
    if (start > pkt.length) return null;
    const pts = flags >= 2 && hlen >= 5 ? readTs(pkt, body + 3) : null;
    const dts = flags === 3 && hlen >= 10 ? readTs(pkt, body + 8) : pts;
    return { payloadStart: start, pts, dts };
  }
  let q = body;
  while (q < pkt.length && pkt[q] === 0xff && q < body + 16) q++;
  if (q < pkt.length && (pkt[q]! & 0xc0) === 0x40) q += 2;
  const m = pkt[q] ?? 0;
  if ((m & 0xf0) === 0x20 && q + 5 <= pkt.length) return { payloadStart: q + 5, pts: readTs(pkt, q), dts: readTs(pkt, q) };
  if ((m & 0xf0) === 0x30 && q + 10 <= pkt.length) return { payloadStart: q + 10, pts: readTs(pkt, q), dts: readTs(pkt, q + 5) };
  if (m === 0x0f) return { payloadStart: q + 1, pts: null, dts: null };
  return null;
}

function tsBytes(prefix: number, ts: bigint): Buffer {
  const v = ((ts % TS_MOD) + TS_MOD) % TS_MOD;
  const b = Buffer.alloc(5);
  b[0] = (prefix << 4) | (Number((v >> 30n) & 7n) << 1) | 1;
  b.writeUInt16BE((Number((v >> 15n) & 0x7fffn) << 1) | 1, 1);
  b.writeUInt16BE((Number(v & 0x7fffn) << 1) | 1, 3);
  return b;
}

/**
 * MPEG-2 PES packets carrying `payload` (timestamps on the first only), each as big as
 * PES_packet_length allows: a payload that fitted one PES with these timestamps fits one.
 */
export function buildPes(streamId: number, payload: Buffer, pts: bigint | null, dts: bigint | null): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  do {
    const first = at === 0;
    let opt: Buffer;
    if (first && pts !== null && dts !== null && dts !== pts) opt = Buffer.concat([Buffer.from([0x80, 0xc0, 10]), tsBytes(3, pts), tsBytes(1, dts)]);
    else if (first && pts !== null) opt = Buffer.concat([Buffer.from([0x80, 0x80, 5]), tsBytes(2, pts)]);
    else opt = Buffer.from([0x80, 0, 0]);
    const part = payload.subarray(at, at + 0xffff - opt.length);
    const head = Buffer.from([0, 0, 1, streamId, 0, 0]);
    head.writeUInt16BE(opt.length + part.length, 4);
    out.push(Buffer.concat([head, opt, part]));
    at += part.length;
  } while (at < payload.length);
  return out;
}

/** Where an access unit starts: in which held PES packet, and where in its payload. */
interface UnitStart {
  /** The PES packet (one of `pieces`) holding the unit's first byte. */
  pkt: Buffer;
  /** Offset of the unit's first byte (its start code) in that packet's payload. */
  at: number;
  /** Timestamps of the PES, when this unit is the first to start in it (PES timestamp rule). */
  pts: bigint | null;
  dts: bigint | null;
  keyframe: boolean;
  sawSlice: boolean;
}

/** The video PES scanned last (or being scanned). */
interface VideoPes {
  pkt: Buffer;
  payloadStart: number;
  pts: bigint | null;
  dts: bigint | null;
  /** A unit started in it (its timestamps are taken). */
  taken: boolean;
}

function isPesPacket(pkt: Buffer): boolean {
  const id = pkt[3]!;
  return (id >= 0xc0 && id <= 0xef) || id === 0xbd;
}

export class PsGopReader {
  readonly counters: PsGopReaderCounters = {
    bytesIn: 0,
    gops: 0,
    skippedBytes: 0,
    resyncBytes: 0,
    discontinuities: 0,
    droppedBytes: 0,
    oversizedGops: 0,
    droppedGops: 0,
    keyframesWithoutPsm: 0,
  };
  /** Stream id → stream type, from the PSMs seen so far. */
  readonly psm = new Map<number, number>();
  private readonly maxGopBytes: number;
  private readonly input = new ByteQueue();
  /** Complete packets of the GOP being assembled (or, while seeking, from the unit being looked at). */
  private pieces: Buffer[] = [];
  private piecesBytes = 0;
  /** Pack/system/PSM packets since the last PES: they go with the PES that follows. */
  private run: Buffer[] = [];
  private runBytes = 0;
  private seeking = true;
  private gopPsm = new Map<number, number>();
  private gopKeyframe = true;
  private gopDamaged = false;
  private videoId: number | null = null;
  private videoCodec: VideoCodec | null = null;
  /** Last bytes of the video ES, for start codes that span PES packets. */
  private carry: Buffer = Buffer.alloc(0);
  private unit: UnitStart | null = null;
  /** The video PES before the one being scanned, and the one being scanned. */
  private prevVideo: VideoPes | null = null;
  private curVideo: VideoPes | null = null;
  private out: PsGop[] = [];
  private sawPsm = false;

  constructor(opts: PsGopReaderOptions = {}) {
    this.maxGopBytes = opts.maxGopBytes ?? DEFAULT_MAX_GOP_BYTES;
  }

  /** The video codec being read (from the PSM, else sniffed), once known. */
  get codec(): VideoCodec | null {
    return this.videoCodec;
  }

  /** Bytes held: the GOP being assembled and unframed input. */
  get bufferedBytes(): number {
    return this.piecesBytes + this.runBytes + this.input.length;
  }

  /** Feeds bytes; returns the GOPs they completed. */
  push(data: Buffer): PsGop[] {
    this.counters.bytesIn += data.length;
    this.input.push(data);
    this.frame();
    const out = this.out;
    this.out = [];
    return out;
  }

  /** Input is missing before the next push (lost packets): drop the partial packet, resynchronise. */
  discontinuity(): void {
    this.counters.discontinuities++;
    this.counters.droppedBytes += this.input.length;
    this.input.clear();
    this.carry = Buffer.alloc(0);
    this.prevVideo = null;
    if (!this.seeking) this.gopDamaged = true;
  }

  /** End of input: the GOP being assembled, if any (its last unit's length unknown). */
  end(): PsGop | null {
    this.counters.droppedBytes += this.input.length;
    this.input.clear();
    const pieces = this.pieces.concat(this.run);
    const gop = this.seeking || this.pieces.length === 0 ? null : this.makeGop(pieces, null, 'input');
    if (!gop) this.counters.skippedBytes += this.piecesBytes + this.runBytes;
    this.pieces = [];
    this.piecesBytes = 0;
    this.run = [];
    this.runBytes = 0;
    this.seeking = true;
    this.unit = null;
    this.prevVideo = null;
    this.carry = Buffer.alloc(0);
    return gop;
  }

  private frame(): void {
    const q = this.input;
    while (q.length >= 4) {
      const h = q.peek(Math.min(q.length, 14));
      if (h[0] !== 0 || h[1] !== 0 || h[2] !== 1) {
        this.resync();
        continue;
      }
      const code = h[3]!;
      let size: number;
      if (code === 0xba) {
        if (h.length < 5) return;
        if ((h[4]! & 0xc0) === 0x40) {
          if (h.length < 14) return;
          size = 14 + (h[13]! & 7);
        } else if ((h[4]! & 0xf0) === 0x20) {
          size = 12;
        } else {
          this.resync();
          continue;
        }
      } else if (code === 0xb9) {
        size = 4;
      } else if (code < 0xbb) {
        this.resync(); // an elementary-stream start code outside a PES
        continue;
      } else {
        if (h.length < 6) return;
        size = 6 + h.readUInt16BE(4);
      }
      if (q.length < size) return;
      this.packet(code, q.take(size));
    }
  }

  /** Skips to the next pack header (at least one byte). */
  private resync(): void {
    const q = this.input;
    const all = q.peek(q.length);
    const next = all.indexOf(PACK, 1);
    const skip = next < 0 ? Math.max(1, q.length - 3) : next;
    this.counters.resyncBytes += skip;
    q.skip(skip);
  }

  private packet(code: number, pkt: Buffer): void {
    if (!isPesPacket(pkt)) {
      if (code === 0xbc) {
        parsePsm(pkt.subarray(6), this.psm);
        this.sawPsm = true;
      }
      this.run.push(pkt);
      this.runBytes += pkt.length;
      if (this.seeking && this.runBytes > MAX_RUN_BYTES) this.dropRun();
      return;
    }
    const video = this.isVideo(code, pkt);
    if (this.seeking && !video && this.unit === null) {
      // Nothing to start a GOP with yet: audio and the like before the first video are skipped.
      this.counters.skippedBytes += pkt.length;
      this.dropRun();
      return;
    }
    for (const r of this.run) this.pieces.push(r);
    this.piecesBytes += this.runBytes;
    this.run = [];
    this.runBytes = 0;
    this.pieces.push(pkt);
    this.piecesBytes += pkt.length;
    if (video) this.scanVideo(pkt);
    if (!this.seeking && this.piecesBytes > this.maxGopBytes) this.oversized();
  }

  private dropRun(): void {
    this.counters.skippedBytes += this.runBytes;
    this.run = [];
    this.runBytes = 0;
  }

  private isVideo(id: number, pkt: Buffer): boolean {
    if (id < 0xe0 || id > 0xef) return false;
    if (this.videoId !== null && id !== this.videoId) return false;
    const type = this.psm.get(id);
    let codec: VideoCodec | null = null;
    if (type === STREAM_TYPE.H264) codec = 'h264';
    else if (type === STREAM_TYPE.H265) codec = 'h265';
    else if (type === undefined) {
      if (this.videoCodec && this.videoId === id) codec = this.videoCodec;
      else {
        const info = pesInfo(pkt);
        const sniffed = info ? sniffVideo(pkt.subarray(info.payloadStart)) : null;
        codec = sniffed === STREAM_TYPE.H264 ? 'h264' : sniffed === STREAM_TYPE.H265 ? 'h265' : null;
      }
    }
    if (!codec) return false;
    this.videoId = id;
    this.videoCodec = codec;
    return true;
  }

  /** Finds the access units starting in this video PES (the demuxer's rules, incrementally). */
  private scanVideo(pkt: Buffer): void {
    const info = pesInfo(pkt);
    if (!info) return;
    const codec = this.videoCodec!;
    const cur: VideoPes = { pkt, payloadStart: info.payloadStart, pts: info.pts, dts: info.dts, taken: false };
    this.curVideo = cur;
    const payload = pkt.subarray(info.payloadStart);
    // The ES tail of the PES before is only looked at again when a start code may begin in it.
    const carry = this.carry.includes(0) ? this.carry : EMPTY;
    const c = carry.length;
    const s = c > 0 ? Buffer.concat([carry, payload]) : payload;
    /** Payload offsets of `cur` moved by this much when it was rebuilt by a cut. */
    let moved = 0;
    const limit = s.length - 6; // a NAL is looked at once its first 3 bytes are here
    let i = 0;
    while (i <= limit) {
      const sc = s.indexOf(START3, i);
      if (sc < 0 || sc > limit) break;
      const h = sc + 3;
      i = h;
      if (s[h] === 0 && s[h + 1] === 0) continue; // an empty NAL (two start codes in a row)
      const nal = s.subarray(h, h + 3);
      const u = this.unit;
      const opens = u === null || isAccessUnitDelimiter(codec, nal) || (u.sawSlice && (opensUnit(codec, nal) || isFirstSliceOfPicture(codec, nal)));
      if (opens) {
        // The unit's first byte: its start code with the zeros before it (a 4-byte start code).
        let first = sc;
        while (first > 0 && s[first - 1] === 0) first--;
        const prev = this.prevVideo;
        let where: VideoPes = cur;
        let at = first - c - moved;
        if (first < c && prev && this.pieces.includes(prev.pkt)) {
          // The start code began in the PES before (it ends with the first bytes of this unit).
          where = prev;
          at = Math.max(0, prev.pkt.length - prev.payloadStart - (c - first));
        } else if (at < 0) {
          at = 0;
        }
        this.unit = { pkt: where.pkt, at, pts: where.taken ? null : where.pts, dts: where.taken ? null : where.dts, keyframe: false, sawSlice: false };
        where.taken = true;
        if (this.seeking) this.trimSeeking();
      }
      const unit = this.unit!;
      if (isSliceNal(codec, nal)) unit.sawSlice = true;
      if (!unit.keyframe && isRandomAccessNal(codec, nal)) {
        unit.keyframe = true;
        const was = { pkt: cur.pkt, payloadStart: cur.payloadStart };
        this.keyframe(unit);
        if (cur.pkt !== was.pkt) moved += was.pkt.length - was.payloadStart - (cur.pkt.length - cur.payloadStart);
      }
    }
    this.curVideo = null;
    this.prevVideo = cur;
    this.carry = Buffer.from(s.subarray(Math.max(0, s.length - 5)));
  }

  /** Index in `pieces` where a cut before `u` falls: before the pack/system/PSM packets right before its PES when it starts that PES. */
  private cutIndex(u: UnitStart): number {
    let k = this.pieces.indexOf(u.pkt);
    if (u.at > 0) return k;
    while (k > 0 && !isPesPacket(this.pieces[k - 1]!)) k--;
    return k;
  }

  /** While seeking, only what the unit being looked at needs is kept. */
  private trimSeeking(): void {
    const n = this.cutIndex(this.unit!);
    if (n <= 0) return;
    const drop = this.pieces.splice(0, n);
    const bytes = drop.reduce((a, b) => a + b.length, 0);
    this.counters.skippedBytes += bytes;
    this.piecesBytes -= bytes;
  }

  private keyframe(u: UnitStart): void {
    if (this.seeking) {
      this.trimSeeking();
      if (!this.sawPsm && this.counters.keyframesWithoutPsm < MAX_KEYFRAMES_WITHOUT_PSM) {
        this.counters.keyframesWithoutPsm++;
        return;
      }
      // The GOP starts here: what lies before the unit in its own PES is the GOP before's.
      const before = this.split(u);
      this.counters.skippedBytes += before.reduce((a, b) => a + b.length, 0);
      this.seeking = false;
      this.gopKeyframe = true;
      this.gopDamaged = false;
      this.gopPsm = new Map(this.psm);
      return;
    }
    this.emit(this.split(u), u.dts, 'keyframe');
    this.gopKeyframe = true;
  }

  /** The GOP is over the bound: hand it on up to the unit being assembled. */
  private oversized(): void {
    const u = this.unit;
    if (!u || this.cutIndex(u) === 0) {
      // One unit over the bound: nothing sensible to hand on.
      this.counters.droppedGops++;
      this.counters.skippedBytes += this.piecesBytes;
      this.pieces = [];
      this.piecesBytes = 0;
      this.unit = null;
      this.prevVideo = null;
      this.seeking = true;
      return;
    }
    this.counters.oversizedGops++;
    this.emit(this.split(u), u.dts, 'size');
    this.gopKeyframe = u.keyframe;
  }

  /**
   * Cuts the held packets where unit `u` starts: returns the packets before it and keeps
   * the unit's as `pieces`. A unit that starts inside a PES splits it: the head (the tail
   * of the unit before, without timestamps) goes before, the rest keeps the PES's.
   */
  private split(u: UnitStart): Buffer[] {
    const k = this.cutIndex(u);
    let before: Buffer[];
    let from: Buffer[];
    if (u.at === 0) {
      before = this.pieces.slice(0, k);
      from = this.pieces.slice(k);
    } else {
      const info = pesInfo(u.pkt)!;
      const payload = u.pkt.subarray(info.payloadStart);
      const id = u.pkt[3]!;
      const tail = buildPes(id, payload.subarray(u.at), info.pts, info.dts);
      before = [...this.pieces.slice(0, k), ...buildPes(id, payload.subarray(0, u.at), null, null)];
      from = [...tail, ...this.pieces.slice(k + 1)];
      // The PES objects that track this packet now mean its tail.
      const rebuilt = tail[0]!;
      const pesStart = rebuilt.length - (tail.length === 1 ? payload.length - u.at : 0);
      for (const v of [this.prevVideo, this.curVideo]) {
        if (v?.pkt === u.pkt) {
          v.pkt = rebuilt;
          v.payloadStart = tail.length === 1 ? pesStart : rebuilt.length;
        }
      }
      u.pkt = rebuilt;
      u.at = 0;
    }
    this.pieces = from;
    this.piecesBytes = from.reduce((a, b) => a + b.length, 0);
    return before;
  }

  private emit(pieces: Buffer[], nextDts: bigint | null, end: PsGop['end']): void {
    if (pieces.length === 0) return;
    this.out.push(this.makeGop(pieces, nextDts, end));
    this.gopPsm = new Map(this.psm);
    this.gopDamaged = false;
  }

  private makeGop(pieces: Buffer[], nextDts: bigint | null, end: PsGop['end']): PsGop {
    this.counters.gops++;
    return { bytes: Buffer.concat(pieces), psm: this.gopPsm, keyframe: this.gopKeyframe, nextDts, end, damaged: this.gopDamaged };
  }
}
