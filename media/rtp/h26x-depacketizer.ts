/**
 * H.264 (RFC 6184) and H.265 (RFC 7798) RTP payloads back into access units, written
 * straight into the camera's NalArena as MP4 samples (4-byte length-prefixed NAL
 * units). Packets come in sequence order (the RTSP client reorders UDP), each with a
 * flag when packets are missing before it.
 *
 * Payloads: H.264 single NAL units (types 1-23), STAP-A (24) and FU-A (28); H.265
 * single NAL units (0-47), aggregation packets (48) and fragmentation units (49).
 * STAP-B, MTAP, FU-B (H.264, interleaved mode only) and PACI (H.265) are counted
 * unsupported and skipped, as is a NAL unit type that may not stand alone (inside an
 * aggregation packet too). DONL fields are never read: they are only sent when
 * sprop-max-don-diff > 0, which media/rtp/rtp-config.ts refuses, so every H.265 payload
 * here is read as sprop-max-don-diff=0 (no DONL/DOND).
 *
 * An access unit ends when the RTP timestamp changes (or at flush()): all the slices of
 * a picture share its timestamp (RFC 6184 §5.1, RFC 7798 §4.1), and some cameras set
 * the marker bit on every slice, so the marker cannot end the unit by itself. It only
 * says the unit was complete at that packet: a loss right after it belongs to the next
 * unit when the next packet's timestamp differs, to this one when it is the same. So a
 * unit is handed on when the first packet of the next one arrives (one frame interval
 * later; fragments are per GOP anyway). One exception: a camera that repeats a
 * timestamp (two frames with one) would have its keyframe buried behind a P slice in
 * one sample, so the first slice of an IDR (H.264) / IRAP (H.265) picture after a slice
 * of another kind in the unit starts a new unit (with the parameter sets and SEI that
 * came after that slice), whose timestamp is one tick later so that decode times keep
 * increasing (counted in `splitUnits`). Access unit delimiters are dropped (MP4 samples
 * do not carry them); parameter sets stay in the sample and are reported with it
 * (`params`), so a changed SPS is seen.
 *
 * Loss: a gap drops the NAL unit being rebuilt from fragments (its start, middle or
 * end is gone) and a fragment without its start; the access unit around it is still
 * handed on, marked `damaged` (a recorder keeps what it got: a decoder conceals the
 * missing slices, as with ffmpeg's recording). Lost packets may be the end of the unit
 * in progress (its marker never came) or the start of the next: both are marked. A
 * unit that lost every NAL unit (a frame of one slice) is no frame: counted damaged,
 * not handed on.
 *
 * Bounds: an access unit over `maxUnitBytes` or `maxUnitNals` is dropped whole
 * (counted in `oversizedUnits`), as is one that finds no room in the arena (whose
 * bound is the GOP's, `NalArena.maxBytes`: `arenaFull` says which, for the caller).
 *
 * Lifetime: the unit handed to `onUnit` is offsets into `arena.buf`; its bytes stay
 * there until the caller moves or rewinds the arena (rtp-fmp4.ts keeps a GOP's units
 * there until it writes the fragment). Nothing of the packet is kept after push().
 */
import { isFirstSliceOfPicture, isParameterSet, parameterSetsIn, type ParameterSets, type VideoCodec } from '../codec/annexb.ts';
import type { NalArena } from './nal-arena.ts';

export interface AccessUnit {
  /** Where its sample lies in the arena: [start, end). */
  start: number;
  end: number;
  rtpTimestamp: number;
  /** It holds an IDR (H.264) or IRAP (H.265) slice. */
  keyframe: boolean;
  /** It holds a slice at all (else only parameter sets or SEI: not a frame). */
  vcl: boolean;
  /** Packets were lost in it: NAL units are missing. */
  damaged: boolean;
  /** The parameter sets it carries (copies), or null when it has none. */
  params: ParameterSets | null;
}

export interface DepacketizerCounters {
  units: number;
  /** NAL units lost with packets (partly received fragments). */
  droppedNals: number;
  damagedUnits: number;
  /** Packets of a kind we do not read (STAP-B, MTAP, FU-B, PACI) or cut short. */
  unsupportedPackets: number;
  /** Access units over maxUnitBytes or maxUnitNals, or that found no room in the arena. */
  oversizedUnits: number;
  /** Keyframes that shared a timestamp with the frame before: made a unit of their own. */
  splitUnits: number;
}

/** An access unit bigger than this is not a camera's frame: dropped (16 MiB). */
export const MAX_UNIT_BYTES = 16 * 1024 * 1024;
/** More NAL units than this in one access unit (slices, SEI…) is garbage: dropped. */
export const MAX_UNIT_NALS = 4096;

const H264_STAP_A = 24;
const H264_FU_A = 28;
const H265_AP = 48;
const H265_FU = 49;
const AUD = { h264: 9, h265: 35 } as const;

export class H26xDepacketizer {
  readonly counters: DepacketizerCounters = { units: 0, droppedNals: 0, damagedUnits: 0, unsupportedPackets: 0, oversizedUnits: 0, splitUnits: 0 };
  private inUnit = false;
  /** The unit's last packet so far had the marker bit: it may be whole. */
  private marked = false;
  private unitStart = 0;
  private unitTs = 0;
  private keyframe = false;
  private vcl = false;
  private damaged = false;
  private hasParams = false;
  private nals = 0;
  /** Units split off at this timestamp (a keyframe after a frame of the same timestamp): ticks added to it. */
  private bump = 0;
  /**
   * Where the NAL units after the unit's last slice that would start the next picture
   * (parameter sets, SEI) begin in the arena (-1: none), how many, and whether
   * parameter sets are among them: they go with a unit split off.
   */
  private leadStart = -1;
  private leadNals = 0;
  private leadParams = false;
  /** The unit is being dropped (too big): its remaining packets are ignored. */
  private dropping = false;
  /** Length slot of the NAL unit being rebuilt from fragments; -1 when none. */
  private fuSlot = -1;
  /** The NAL unit whose fragments are still arriving was counted dropped already. */
  private fuCounted = false;
  /** The NAL header a fragmentation unit rebuilds (reused: no memory per packet). */
  private readonly fuHead = Buffer.alloc(2);
  /** A fragmented NAL unit's header and first payload byte (reused). */
  private readonly fuFirst264 = Buffer.alloc(2);
  private readonly fuFirst265 = Buffer.alloc(3);
  /** The last unit dropped found no room in the arena (the GOP is full), rather than being over its own bounds. */
  arenaFull = false;

  constructor(
    private readonly codec: VideoCodec,
    private readonly arena: NalArena,
    private readonly onUnit: (unit: AccessUnit) => void,
    private readonly maxUnitBytes = MAX_UNIT_BYTES,
    private readonly maxUnitNals = MAX_UNIT_NALS,
  ) {}

  /**
   * One RTP payload, packets in sequence order (reordering is the caller's); `gap`:
   * packets were lost right before this one. Never throws for what a camera sends.
   */
  push(p: Buffer, rtpTimestamp: number, marker: boolean, gap: boolean): void {
    // A unit the marker said was whole, followed by another timestamp: whole indeed, and
    // any packets lost in between were the next unit's.
    if (this.inUnit && this.marked && rtpTimestamp !== this.unitTs) this.endUnit();
    // Otherwise the lost packets may have been the end of the unit in progress (or, after
    // a marker, more of its slices): mark it before it ends.
    if (gap) this.lose();
    if (this.inUnit && rtpTimestamp !== this.unitTs) this.endUnit();
    if (!this.inUnit) {
      this.begin(rtpTimestamp, gap);
      this.bump = 0;
    }
    if (!this.dropping) {
      if (this.codec === 'h264') this.h264(p);
      else this.h265(p);
    }
    this.marked = marker;
  }

  private begin(rtpTimestamp: number, damaged: boolean): void {
    this.inUnit = true;
    this.unitStart = this.arena.used;
    this.unitTs = rtpTimestamp;
    this.keyframe = false;
    this.vcl = false;
    this.damaged = damaged;
    this.hasParams = false;
    this.nals = 0;
    this.dropping = false;
    this.leadStart = -1;
    this.leadNals = 0;
    this.leadParams = false;
  }

  /**
   * Whether a slice NAL unit of `type` (its first bytes from p[from], header included)
   * starts a keyframe picture after a slice of another picture in the unit (a repeated
   * timestamp): then the unit is split before it.
   */
  private splitsBefore(type: number, p: Buffer, from: number): boolean {
    if (!this.vcl || this.keyframe || this.dropping) return false;
    if (this.codec === 'h264' ? type !== 5 : type < 16 || type > 23) return false;
    return isFirstSliceOfPicture(this.codec, from === 0 ? p : p.subarray(from));
  }

  /** Ends the unit before its trailing parameter sets/SEI (see splitsBefore) and starts the next with them, one tick later. */
  private split(): void {
    const lead = this.leadStart >= 0 ? Buffer.from(this.arena.buf.subarray(this.leadStart, this.arena.used)) : null;
    const leadNals = this.leadNals;
    const leadParams = this.leadParams;
    if (this.leadStart >= 0) this.arena.used = this.leadStart;
    this.leadParams = false;
    const ts = this.unitTs;
    const bump = this.bump + 1;
    this.counters.splitUnits++;
    this.endUnit();
    this.begin(ts, false);
    this.bump = bump;
    if (lead && this.room(lead.length, leadNals)) {
      this.arena.append(lead, 0, lead.length);
      this.hasParams = leadParams;
    }
  }

  /** Ends the access unit in progress (the camera hung up, or its source changed). */
  flush(): void {
    if (this.inUnit) this.endUnit();
  }

  private h264(p: Buffer): void {
    if (p.length < 1) return;
    const type = p[0]! & 0x1f;
    if (type >= 1 && type <= 23) return this.nal(p, 0, p.length);
    if (type === H264_STAP_A) return this.aggregate(p, 1);
    if (type === H264_FU_A && p.length >= 2) {
      this.fuHead[0] = (p[0]! & 0xe0) | (p[1]! & 0x1f);
      return this.fragment(p, p[1]!, 2, 1);
    }
    this.counters.unsupportedPackets++;
  }

  private h265(p: Buffer): void {
    if (p.length < 2) return void this.counters.unsupportedPackets++;
    const type = (p[0]! >> 1) & 0x3f;
    if (type <= 47) return this.nal(p, 0, p.length);
    if (type === H265_AP) return this.aggregate(p, 2);
    if (type === H265_FU && p.length >= 3) {
      const fu = p[2]!;
      this.fuHead[0] = (p[0]! & 0x81) | ((fu & 0x3f) << 1);
      this.fuHead[1] = p[1]!;
      return this.fragment(p, fu, 3, 2);
    }
    this.counters.unsupportedPackets++;
  }

  /** NAL units with 16-bit sizes from `at` (STAP-A, AP). */
  private aggregate(p: Buffer, at: number): void {
    while (at + 2 <= p.length) {
      const n = p.readUInt16BE(at);
      if (n === 0 || at + 2 + n > p.length) return void this.counters.unsupportedPackets++;
      this.nal(p, at + 2, at + 2 + n);
      at += 2 + n;
    }
  }

  /** One whole NAL unit, p[from, to). */
  private nal(p: Buffer, from: number, to: number): void {
    const type = this.typeOf(p[from]!);
    // Only types that may stand alone (an aggregation inside an aggregation is not one).
    if (this.codec === 'h264' ? type === 0 || type > 23 : type > 47 || to - from < 2) return void this.counters.unsupportedPackets++;
    if (type === AUD[this.codec]) return;
    if (this.splitsBefore(type, p, from)) this.split();
    if (!this.room(4 + to - from, 1)) return;
    const slot = this.arena.lengthSlot();
    this.arena.append(p, from, to);
    this.arena.setLength(slot);
    this.note(type, slot);
  }

  /** A fragmentation unit (FU-A, H.265 FU): `fu` its header, payload from `at`; the rebuilt NAL header is fuHead[0, headerLen). */
  private fragment(p: Buffer, fu: number, at: number, headerLen: number): void {
    const start = (fu & 0x80) !== 0;
    const end = (fu & 0x40) !== 0;
    if (start) {
      if (this.fuSlot >= 0) this.dropFragment(); // its end was lost
      this.fuCounted = false;
      if (at < p.length) {
        // The NAL unit's header and first byte, as isFirstSliceOfPicture reads them.
        const head = headerLen === 1 ? this.fuFirst264 : this.fuFirst265;
        this.fuHead.copy(head, 0, 0, headerLen);
        head[headerLen] = p[at]!;
        if (this.splitsBefore(this.typeOf(head[0]!), head, 0)) this.split();
      }
      if (!this.room(4 + headerLen + p.length - at, 1)) return;
      this.fuSlot = this.arena.lengthSlot();
      this.arena.append(this.fuHead, 0, headerLen);
    } else if (this.fuSlot < 0) {
      // The start of this NAL unit was lost: the rest is no use (counted once: here,
      // unless the loss already counted it).
      if (end) {
        if (!this.fuCounted) this.counters.droppedNals++;
        this.fuCounted = false;
        this.damaged = true;
      }
      return;
    } else if (!this.room(p.length - at)) {
      return;
    }
    this.arena.append(p, at, p.length);
    if (end) {
      this.arena.setLength(this.fuSlot);
      this.note(this.typeOf(this.fuHead[0]!), this.fuSlot);
      this.fuSlot = -1;
    }
  }

  /** The NAL unit type from its first byte. */
  private typeOf(first: number): number {
    return this.codec === 'h264' ? first & 0x1f : (first >> 1) & 0x3f;
  }

  /** A NAL unit of `type` appended at `slot` (its length field). */
  private note(type: number, slot: number): void {
    // H.264: slices 1-5, IDR 5, SEI 6, SPS 7, PPS 8. H.265: slices 0-31, IRAP 16-23, VPS 32, SPS 33, PPS 34, prefix SEI 39.
    const h264 = this.codec === 'h264';
    if (h264 ? type >= 1 && type <= 5 : type <= 31) {
      this.vcl = true;
      this.leadStart = -1;
      this.leadNals = 0;
      this.leadParams = false;
    } else if (this.vcl && (h264 ? type >= 6 && type <= 8 : (type >= 32 && type <= 34) || type === 39)) {
      // After a slice: the start of another picture's NAL units, if one comes at this timestamp.
      if (this.leadStart < 0) this.leadStart = slot;
      this.leadNals++;
    }
    if (h264 ? type === 5 : type >= 16 && type <= 23) this.keyframe = true;
    else if (h264 ? type === 7 || type === 8 : type >= 32 && type <= 34) {
      if (this.leadStart >= 0) this.leadParams = true;
      else this.hasParams = true;
    }
  }

  /** Packets were lost: a NAL unit being rebuilt from fragments is gone. */
  private lose(): void {
    if (this.fuSlot >= 0) this.dropFragment();
    if (this.inUnit) this.damaged = true;
  }

  private dropFragment(): void {
    this.arena.used = this.fuSlot;
    this.fuSlot = -1;
    this.fuCounted = true;
    this.counters.droppedNals++;
    this.damaged = true;
  }

  /** Room for `n` more bytes (`nals` more NAL units) of this unit; else the unit is dropped whole. */
  private room(n: number, nals = 0): boolean {
    if (this.dropping) return false; // counted when it began
    const within = this.arena.used - this.unitStart + n <= this.maxUnitBytes && this.nals + nals <= this.maxUnitNals;
    this.arenaFull = within && !this.arena.reserve(n);
    if (within && !this.arenaFull) {
      this.nals += nals;
      return true;
    }
    this.counters.oversizedUnits++;
    this.arena.used = this.unitStart;
    this.fuSlot = -1;
    this.dropping = true;
    return false;
  }

  private endUnit(): void {
    this.inUnit = false;
    if (this.fuSlot >= 0) this.dropFragment(); // its end never came
    if (this.dropping) return;
    if (this.arena.used === this.unitStart) {
      // Every NAL unit of it was lost: no frame (the one before lasts until the next).
      if (this.damaged) this.counters.damagedUnits++;
      return;
    }
    this.counters.units++;
    if (this.damaged) this.counters.damagedUnits++;
    const unit: AccessUnit = {
      start: this.unitStart,
      end: this.arena.used,
      rtpTimestamp: (this.unitTs + this.bump) >>> 0,
      keyframe: this.keyframe,
      vcl: this.vcl,
      damaged: this.damaged,
      params: this.hasParams || this.leadParams ? this.paramsOf(this.unitStart, this.arena.used) : null,
    };
    this.onUnit(unit);
  }

  /** Copies of the parameter sets in the sample at [start, end). */
  private paramsOf(start: number, end: number): ParameterSets {
    const nals: Buffer[] = [];
    const buf = this.arena.buf;
    for (let at = start; at + 4 <= end;) {
      const n = buf.readUInt32BE(at);
      const nal = buf.subarray(at + 4, at + 4 + n);
      if (isParameterSet(this.codec, nal)) nals.push(Buffer.from(nal));
      at += 4 + n;
    }
    return parameterSetsIn(this.codec, nals);
  }
}
