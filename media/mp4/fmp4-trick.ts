/**
 * Fragment rewriting for trick play (pure; no I/O): which mode a request means, an
 * init reduced to the video track, new `moof`+`mdat` headers for a chosen list of
 * samples, and time rescaling without drift.
 *
 * Trick output carries video only: audio at another speed cannot be appended to an
 * MSE SourceBuffer meaningfully, and a track left without samples would hold back the
 * player's buffered range (MSE intersects the tracks' ranges).
 */
import { Mp4FormatError, childBoxes, findAll, findBox, findChild, fullBoxBody, type Box } from './boxes.ts';

export const MIN_SPEED = 1 / 8;
export const MAX_SPEED = 16;
/** Above this speed only I-frames are sent (decoding every frame at 8x+ is what stalls players). */
export const IFRAME_SPEED_THRESHOLD = 4;

export type TrickMode =
  /** Every track, decode times exact (speed 1). */
  | { kind: 'normal' }
  /** Every video frame, times divided by `speed`. */
  | { kind: 'frames'; speed: number }
  /** One I-frame per GOP, shown for the GOP's duration divided by `speed`; reverse walks GOPs backwards. */
  | { kind: 'iframes'; speed: number; reverse: boolean };

export function trickMode(speed: number, iframes: boolean, reverse: boolean): TrickMode {
  if (reverse || iframes || speed > IFRAME_SPEED_THRESHOLD) return { kind: 'iframes', speed, reverse };
  if (speed !== 1) return { kind: 'frames', speed };
  return { kind: 'normal' };
}

/**
 * Maps input durations to output durations at `speed` by cumulative rounding, so the
 * output clock never drifts from input/speed by more than half a tick, and every
 * duration is at least 1 tick (decode times strictly increase).
 */
export class Rescaler {
  private inAcc = 0;
  private outAcc = 0;
  constructor(readonly speed: number) {}

  duration(inTicks: number): number {
    this.inAcc += inTicks;
    const target = Math.round(this.inAcc / this.speed);
    const d = Math.max(1, target - this.outAcc);
    this.outAcc += d;
    return d;
  }

  offset(inTicks: number): number {
    return Math.round(inTicks / this.speed);
  }

  /** Output ticks emitted so far. */
  get elapsed(): number {
    return this.outAcc;
  }
}

function box(type: string, ...payload: Buffer[]): Buffer {
  const size = 8 + payload.reduce((n, b) => n + b.length, 0);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(size, 0);
  head.write(type, 4, 'latin1');
  return Buffer.concat([head, ...payload], size);
}

function slice(buf: Buffer, b: Box): Buffer {
  return buf.subarray(b.offset, b.offset + b.size);
}

function trakId(init: Buffer, trak: Box): number {
  const tkhd = findChild(init, 'tkhd', trak);
  if (!tkhd) throw new Mp4FormatError('MP4_NO_INIT', 'trak without tkhd');
  const { version, body } = fullBoxBody(init, tkhd, 20);
  return init.readUInt32BE(body + (version === 1 ? 16 : 8));
}

/**
 * `ftyp` + a `moov` holding only track `trackId` (its trak and trex); other top-level
 * moov children (mvhd, mvex/mehd) are kept as they are.
 */
export function singleTrackInit(init: Buffer, trackId: number): Buffer {
  const top = childBoxes(init, 0, init.length);
  const ftyp = top.find((b) => b.type === 'ftyp');
  const moov = top.find((b) => b.type === 'moov');
  if (!ftyp || !moov) throw new Mp4FormatError('MP4_NO_INIT', 'init without ftyp+moov');
  const kept: Buffer[] = [];
  let found = false;
  for (const child of childBoxes(init, moov.offset + moov.headerSize, moov.offset + moov.size)) {
    if (child.type === 'trak') {
      if (trakId(init, child) !== trackId) continue;
      found = true;
      kept.push(slice(init, child));
    } else if (child.type === 'mvex') {
      const parts = childBoxes(init, child.offset + child.headerSize, child.offset + child.size)
        .filter((c) => c.type !== 'trex' || init.readUInt32BE(c.offset + c.headerSize + 4) === trackId)
        .map((c) => slice(init, c));
      kept.push(box('mvex', ...parts));
    } else if (child.type !== 'udta') {
      kept.push(slice(init, child));
    }
  }
  if (!found) throw new Mp4FormatError('MP4_NO_INIT', `init has no track ${trackId}`);
  return Buffer.concat([slice(init, ftyp), box('moov', ...kept)]);
}

/** The number of video tracks in an init (trick play needs exactly one). */
export function trackIds(init: Buffer): number[] {
  const moov = findBox(init, 'moov');
  if (!moov) throw new Mp4FormatError('MP4_NO_INIT', 'no moov');
  return findAll(init, 'trak', moov).map((t) => trakId(init, t));
}

export interface OutSample {
  duration: number;
  size: number;
  flags: number;
  compositionOffset: number;
}

/** Sample flags: sync (depends on no other) and non-sync (depends on others). */
export const SYNC_FLAGS = 0x02000000;
export const NON_SYNC_FLAGS = 0x01010000;

/**
 * `moof` (one traf, default-base-is-moof, tfdt v1, a full trun) followed by the header
 * of an `mdat` whose payload, the samples' bytes in order, the caller appends.
 */
export function fragmentHeader(sequence: number, trackId: number, baseDecodeTime: bigint, samples: readonly OutSample[]): Buffer {
  const n = samples.length;
  const trunSize = 12 + 4 + 4 + n * 16;
  const trafSize = 8 + 16 + 20 + trunSize;
  const moofSize = 8 + 16 + trafSize;
  let payload = 0;
  for (const s of samples) payload += s.size;
  const buf = Buffer.alloc(moofSize + 8);
  let p = 0;
  const u32 = (v: number): void => {
    buf.writeUInt32BE(v >>> 0, p);
    p += 4;
  };
  const head = (size: number, type: string): void => {
    u32(size);
    buf.write(type, p, 'latin1');
    p += 4;
  };
  head(moofSize, 'moof');
  head(16, 'mfhd');
  u32(0);
  u32(sequence);
  head(trafSize, 'traf');
  head(16, 'tfhd');
  u32(0x020000); // default-base-is-moof
  u32(trackId);
  head(20, 'tfdt');
  u32(0x01000000); // version 1: 64-bit time
  u32(Number(baseDecodeTime >> 32n));
  u32(Number(baseDecodeTime & 0xffffffffn));
  head(trunSize, 'trun');
  u32(0x01000f01); // version 1 (signed offsets); data-offset, duration, size, flags, cto
  u32(n);
  u32(moofSize + 8); // data starts right after the mdat header
  for (const s of samples) {
    u32(s.duration);
    u32(s.size);
    u32(s.flags);
    buf.writeInt32BE(s.compositionOffset, p);
    p += 4;
  }
  if (payload + 8 > 0xffffffff) throw new Mp4FormatError('MP4_UNSUPPORTED', 'fragment too large');
  head(payload + 8, 'mdat');
  return buf;
}
