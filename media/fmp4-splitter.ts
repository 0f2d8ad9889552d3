/**
 * Cuts ffmpeg's fragmented-MP4 byte stream into an init (`ftyp`+`moov`) and
 * fragments (`moof`+`mdat`, one GOP each), as objects. It holds at most one fragment:
 * bytes are kept as the chunks they arrived in and copied once, when a whole fragment
 * is there. A new `ftyp`+`moov` mid-stream is re-emitted as a new init (codec change).
 * Boxes we do not need (`mfra` at a clean exit, `free`, `sidx`, `styp`, `prft`…) are
 * skipped. Garbage, a moof not followed by an mdat, or a stream that ends inside a box
 * is an Mp4FormatError on the stream.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { MAX_BOX_BYTES, Mp4FormatError, readBoxHeader, type BoxHeader } from './boxes.ts';
import { parseInit, type InitInfo } from './init-info.ts';
import { parseMoof, type MoofInfo } from './moof.ts';

export type Fmp4Chunk =
  | { kind: 'init'; bytes: Buffer; info: InitInfo }
  | {
      kind: 'fragment';
      /** moof+mdat exactly */
      bytes: Buffer;
      moofSize: number;
      moof: MoofInfo;
      /** Duration of the video track (or the first track without video), in ticks. */
      durationTicks: number;
      timescale: number;
      keyframe: boolean;
    };

export class Fmp4Splitter extends Transform {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ftyp: Buffer | null = null;
  private init: InitInfo | null = null;
  /** Bytes received in total (for metrics). */
  bytesIn = 0;

  constructor() {
    super({ readableObjectMode: true });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.bytesIn += chunk.length;
    try {
      this.drain();
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.buffered > 0) done(new Mp4FormatError('MP4_TRUNCATED', `stream ended inside a box (${this.buffered} bytes left)`));
    else done();
  }

  /** The header at `offset` into the buffered bytes, or null if not all there yet. */
  private peekHeader(offset: number): BoxHeader | null {
    if (this.buffered < offset + 16 && this.buffered < offset + 8) return null;
    const head = this.peek(offset, Math.min(16, this.buffered - offset));
    const h = readBoxHeader(head, 0, Number.MAX_SAFE_INTEGER);
    if (!h) return null;
    if (head.readUInt32BE(0) === 0) throw new Mp4FormatError('MP4_UNSUPPORTED', `box ${h.type} of unknown size in a stream`);
    if (h.size > MAX_BOX_BYTES) throw new Mp4FormatError('MP4_BAD_BOX', `box ${h.type} of ${h.size} bytes is beyond the ${MAX_BOX_BYTES} limit`);
    return h;
  }

  /** Copies `length` buffered bytes starting at `offset` without consuming them. */
  private peek(offset: number, length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let skip = offset;
    let written = 0;
    for (const c of this.chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      const n = Math.min(c.length - skip, length - written);
      c.copy(out, written, skip, skip + n);
      written += n;
      skip = 0;
      if (written === length) break;
    }
    return out;
  }

  /** Removes and returns the first `length` buffered bytes (one copy at most). */
  private consume(length: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= length) {
      out = first.subarray(0, length);
      if (first.length === length) this.chunks.shift();
      else this.chunks[0] = first.subarray(length);
    } else {
      out = Buffer.allocUnsafe(length);
      let written = 0;
      while (written < length) {
        const c = this.chunks[0]!;
        const n = Math.min(c.length, length - written);
        c.copy(out, written, 0, n);
        written += n;
        if (n === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(n);
      }
    }
    this.buffered -= length;
    return out;
  }

  private drain(): void {
    for (;;) {
      const h = this.peekHeader(0);
      if (!h) return;
      if (h.type === 'moof') {
        // Wait for moof + the following mdat and cut them as one fragment.
        const next = this.buffered >= h.size + 8 ? this.peekHeader(h.size) : null;
        if (!next) return;
        if (next.type !== 'mdat') throw new Mp4FormatError('MP4_UNEXPECTED_BOX', `moof followed by ${next.type}`);
        if (this.buffered < h.size + next.size) return;
        this.emitFragment(this.consume(h.size + next.size), h.size);
        continue;
      }
      if (this.buffered < h.size) return;
      const box = this.consume(h.size);
      if (h.type === 'ftyp') {
        this.ftyp = Buffer.from(box);
      } else if (h.type === 'moov') {
        if (!this.ftyp) throw new Mp4FormatError('MP4_NO_INIT', 'moov without ftyp');
        const bytes = Buffer.concat([this.ftyp, box]);
        this.init = parseInit(bytes);
        this.push({ kind: 'init', bytes, info: this.init } satisfies Fmp4Chunk);
      } else if (h.type === 'mdat') {
        throw new Mp4FormatError('MP4_UNEXPECTED_BOX', 'mdat without moof');
      }
      // Anything else (mfra, free, skip, sidx, styp, prft, uuid…) is not needed.
    }
  }

  private emitFragment(bytes: Buffer, moofSize: number): void {
    const init = this.init;
    if (!init) throw new Mp4FormatError('MP4_NO_INIT', 'fragment before init');
    const moof = parseMoof(bytes.subarray(0, moofSize), init.trexDefaults);
    const mainId = init.videoTrackId ?? init.tracks[0]!.id;
    const main = moof.tracks.find((t) => t.trackId === mainId) ?? moof.tracks[0];
    if (!main) throw new Mp4FormatError('MP4_BAD_BOX', 'moof without track fragments');
    const timescale = init.tracks.find((t) => t.id === main.trackId)?.timescale ?? 90_000;
    this.push({
      kind: 'fragment',
      bytes,
      moofSize,
      moof,
      durationTicks: main.durationTicks,
      timescale,
      keyframe: main.firstSampleSync,
    } satisfies Fmp4Chunk);
  }
}
