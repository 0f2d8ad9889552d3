/**
 * Cuts ffmpeg's fragmented-MP4 byte stream into an init (`ftyp`+`moov`) and
 * fragments (`moof`+`mdat`, one GOP each), as objects.
 *
 * Memory: it holds at most the box being assembled (one fragment). Incoming chunks are
 * kept as a list and copied once, when the whole box is there; a box that lies within
 * one chunk is handed on as a slice of it, without a copy. Boxes we do not need
 * (`mfra` at a clean exit, `free`, `skip`, `sidx`, `styp`, `prft`, `uuid`…) are skipped
 * as they stream by, never buffered.
 *
 * A new `ftyp`+`moov` mid-stream is parsed and re-emitted as a new init (a codec
 * change). A fragment that ends in video samples holding no picture (ffmpeg's stub of
 * a frame cut off by a dropped connection) is re-written without them
 * (media/mp4/pictureless-tail.ts). Errors are Mp4FormatError on the stream: a box type that is not 4 printable
 * characters or a size below its header (MP4_BAD_BOX), a box over MAX_BOX_BYTES
 * (MP4_BAD_BOX), a size-0 box (MP4_UNSUPPORTED: its end is unknowable on a pipe), a
 * moof not followed by an mdat or an mdat without a moof (MP4_UNEXPECTED_BOX), a
 * fragment before any init (MP4_NO_INIT), and at the end of input a partial box
 * (MP4_TRUNCATED: the stream stopped mid-box, e.g. mid-GOP).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { MAX_BOX_BYTES, Mp4FormatError, isBoxType, readBoxHeader } from './boxes.ts';
import { parseInit, type InitInfo } from './init-info.ts';
import { parseMoof, type MoofInfo } from './moof.ts';
import { dropPicturelessTail } from './pictureless-tail.ts';

export type Fmp4Chunk =
  | { kind: 'init'; bytes: Buffer; info: InitInfo }
  | {
      kind: 'fragment';
      /** moof+mdat exactly */
      bytes: Buffer;
      moofSize: number;
      moof: MoofInfo;
      /** Duration of the video track (or of the first track without video), in ticks. */
      durationTicks: number;
      /** Timescale of that track. */
      timescale: number;
      /** The first sample of that track is a sync sample. */
      keyframe: boolean;
      /**
       * How long its producer held it after its last frame had arrived (the MP2P ingest
       * waiting for the AAC of its audio): the writer times it from then, not from when
       * it reached the writer. Absent: handed on at once (ffmpeg's output).
       */
      heldMs?: number;
    };

/** Boxes that are cut and handed on whole; anything else at top level is skipped. */
const KEPT = new Set(['ftyp', 'moov', 'moof', 'mdat']);

export interface Fmp4SplitterOptions {
  /** Largest box accepted (default MAX_BOX_BYTES, 256 MiB). */
  maxBoxBytes?: number;
}

export class Fmp4Splitter extends Transform {
  /** Bytes received in total. */
  bytesIn = 0;
  /** Fragments emitted in total. */
  fragmentsOut = 0;
  /** Fragments whose trailing samples held no picture and were dropped (media/mp4/pictureless-tail.ts). */
  picturelessDropped = 0;

  private readonly maxBoxBytes: number;
  /** Unconsumed input, oldest first; `head` is the read position in chunks[0]. */
  private chunks: Buffer[] = [];
  private head = 0;
  private buffered = 0;
  /** Header of the box being assembled (type, size, header size), once known. */
  private boxType = '';
  private boxSize = 0;
  /** When the current box is a moof: its size; the box being assembled is then moof+mdat. */
  private moofSize = 0;
  /** Bytes of a skipped box still to drop. */
  private skipping = 0;
  private skippingType = '';
  private ftyp: Buffer | null = null;
  private init: InitInfo | null = null;
  private readonly scratch = Buffer.alloc(16);

  constructor(opts: Fmp4SplitterOptions = {}) {
    super({ readableObjectMode: true });
    this.maxBoxBytes = opts.maxBoxBytes ?? MAX_BOX_BYTES;
  }

  /** Bytes held right now (at most the box being assembled: one fragment). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** The init in force (the last one seen), if any. */
  get currentInit(): InitInfo | null {
    return this.init;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (!Buffer.isBuffer(chunk)) chunk = Buffer.from(chunk);
    this.bytesIn += chunk.length;
    try {
      this.accept(chunk);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.skipping > 0) {
      done(new Mp4FormatError('MP4_TRUNCATED', `stream ended inside a ${this.skippingType} box (${this.skipping} bytes missing)`));
    } else if (this.buffered > 0) {
      const what = this.boxType ? `a ${this.moofSize ? 'moof+mdat fragment' : this.boxType} box` : 'a box header';
      done(new Mp4FormatError('MP4_TRUNCATED', `stream ended inside ${what} (${this.buffered} bytes buffered)`));
    } else {
      done();
    }
  }

  private accept(chunk: Buffer): void {
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, chunk.length);
      this.skipping -= n;
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.boxType === '') {
        if (!this.readHeader()) return;
        if (this.boxType === '') {
          // A skipped box: dropped whole, or the rest is dropped as it arrives.
          if (this.skipping > 0 || this.buffered === 0) return;
          continue;
        }
      }
      if (this.moofSize > 0 && this.boxSize === this.moofSize) {
        // A moof whose mdat header has not been seen yet.
        if (!this.readMdatHeader()) return;
      }
      if (this.buffered < this.boxSize) return;
      this.emitBox();
      if (this.buffered === 0) return;
    }
  }

  /** Copies `n` bytes at `offset` past the read position into the scratch buffer; false if not there yet. */
  private peek(offset: number, n: number): boolean {
    if (this.buffered < offset + n) return false;
    let skip = this.head + offset;
    let written = 0;
    for (const c of this.chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      const k = Math.min(c.length - skip, n - written);
      c.copy(this.scratch, written, skip, skip + k);
      written += k;
      skip = 0;
      if (written === n) break;
    }
    return true;
  }

  /** Parses the header at `offset` past the read position: [type, size], or null if incomplete. */
  private header(offset: number): [string, number] | null {
    if (!this.peek(offset, 8)) return null;
    const s = this.scratch;
    if (!isBoxType(s, 4)) {
      throw new Mp4FormatError(
        'MP4_BAD_BOX',
        `not a box type: ${JSON.stringify(s.toString('latin1', 4, 8))} at stream byte ${this.bytesIn - this.buffered + offset}`,
      );
    }
    const type = s.toString('latin1', 4, 8);
    let size = s.readUInt32BE(0);
    let headerSize = 8;
    if (size === 1) {
      if (!this.peek(offset, 16)) return null;
      const big = s.readBigUInt64BE(8);
      size = big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(big);
      headerSize = 16;
    } else if (size === 0) {
      throw new Mp4FormatError('MP4_UNSUPPORTED', `box ${type} with size 0 (to the end) in a stream`);
    }
    if (size < headerSize) throw new Mp4FormatError('MP4_BAD_BOX', `box ${type} has size ${size}`);
    if (size > this.maxBoxBytes) throw new Mp4FormatError('MP4_BAD_BOX', `box ${type} of ${size} bytes is beyond the ${this.maxBoxBytes} limit`);
    return [type, size];
  }

  /** Reads the next top-level box header; sets up skipping for boxes we do not keep. */
  private readHeader(): boolean {
    const h = this.header(0);
    if (!h) return false;
    const [type, size] = h;
    if (type === 'mdat') throw new Mp4FormatError('MP4_UNEXPECTED_BOX', 'mdat without a moof before it');
    if (!KEPT.has(type)) {
      // Drop what we have of it now and the rest as it arrives.
      const drop = Math.min(size, this.buffered);
      this.discard(drop);
      this.skipping = size - drop;
      this.skippingType = type;
      return true;
    }
    if (type === 'moof' && !this.init) throw new Mp4FormatError('MP4_NO_INIT', 'fragment before any init (ftyp+moov)');
    if (type === 'moov' && !this.ftyp) throw new Mp4FormatError('MP4_NO_INIT', 'moov without ftyp');
    this.boxType = type;
    this.boxSize = size;
    this.moofSize = type === 'moof' ? size : 0;
    return true;
  }

  /** With the moof header read, checks that an mdat follows and extends the box over it. */
  private readMdatHeader(): boolean {
    const h = this.header(this.moofSize);
    if (!h) return false;
    const [type, size] = h;
    if (type !== 'mdat') throw new Mp4FormatError('MP4_UNEXPECTED_BOX', `moof followed by ${type}, not mdat`);
    if (this.moofSize + size > this.maxBoxBytes)
      throw new Mp4FormatError('MP4_BAD_BOX', `fragment of ${this.moofSize + size} bytes is beyond the ${this.maxBoxBytes} limit`);
    this.boxSize = this.moofSize + size;
    return true;
  }

  private discard(n: number): void {
    this.buffered -= n;
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

  /** Removes and returns the next `n` bytes: a slice when they lie in one chunk, else one copy. */
  private takeBytes(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
    } else {
      out = Buffer.allocUnsafe(n);
      let written = 0;
      while (written < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length - this.head, n - written);
        c.copy(out, written, this.head, this.head + k);
        written += k;
        this.head += k;
        if (this.head === c.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
    }
    this.buffered -= n;
    return out;
  }

  private emitBox(): void {
    const type = this.boxType;
    const bytes = this.takeBytes(this.boxSize);
    const moofSize = this.moofSize;
    this.boxType = '';
    this.boxSize = 0;
    this.moofSize = 0;
    if (type === 'ftyp') {
      this.ftyp = Buffer.from(bytes); // small; own copy so the input chunk is not pinned
    } else if (type === 'moov') {
      const init = Buffer.concat([this.ftyp!, bytes]);
      this.init = parseInit(init);
      this.push({ kind: 'init', bytes: init, info: this.init } satisfies Fmp4Chunk);
    } else {
      this.emitFragment(bytes, moofSize);
    }
  }

  private emitFragment(bytes: Buffer, moofSize: number): void {
    const init = this.init!;
    let moof = parseMoof(bytes.subarray(0, moofSize), init.trexDefaults);
    const nal = init.videoTrackId !== null ? init.tracks.find((t) => t.id === init.videoTrackId)?.nal : undefined;
    const trimmed = nal ? dropPicturelessTail(bytes, moof, init.videoTrackId!, nal) : null;
    if (trimmed) {
      this.picturelessDropped++;
      if (trimmed.byteLength === 0) return;
      bytes = Buffer.from(trimmed.buffer, trimmed.byteOffset, trimmed.byteLength);
      moofSize = readBoxHeader(bytes, 0)!.size;
      moof = parseMoof(bytes.subarray(0, moofSize), init.trexDefaults);
    }
    const mainId = init.videoTrackId ?? init.tracks[0]!.id;
    const main = moof.tracks.find((t) => t.trackId === mainId) ?? moof.tracks[0];
    if (!main) throw new Mp4FormatError('MP4_BAD_BOX', 'moof without track fragments');
    const timescale = init.tracks.find((t) => t.id === main.trackId)?.timescale ?? 90_000;
    this.fragmentsOut++;
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
