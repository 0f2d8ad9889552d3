/**
 * AAC frames from RTP payloads of an mpeg4-generic track (RFC 3640 §3.2, AAC-hbr and
 * AAC-lbr): a 16-bit AU-headers-length in bits, the AU headers (an AU size of
 * `sizeLength` bits, then an index of `indexLength` bits for the first and an index
 * delta of `indexDeltaLength` bits for the others), padding to a byte, then the AUs
 * one after the other. Several AUs in one packet are timed `frameTicks` apart (1024
 * samples in the RTP clock; plus any index delta). One AU larger than a packet comes
 * in fragments (RFC 3640 §3.2.3): same timestamp, each with one AU header giving the
 * whole AU's size, the marker bit on the last one only; a packet lost in between, a
 * fragment that does not continue it, or a marker before the AU is whole drops that AU.
 * The optional AU-header fields (CTS/DTS deltas, RAP, stream state) and the auxiliary
 * section are refused by rtp-config.ts, so they are never read here.
 *
 * Memory: each frame handed on is a copy (a few hundred bytes, a few dozen a second);
 * the packet it came from may be a reused read buffer.
 */
import type { RtpAudioConfig } from './rtp-config.ts';

/** Samples per AAC frame (AAC-LC; what cameras send). */
export const AAC_FRAME_SAMPLES = 1024;
/** An AU bigger than this is not audio: dropped. */
const MAX_AU_BYTES = 64 * 1024;

export interface AacDepacketizerCounters {
  frames: number;
  /** Packets whose AU headers do not fit the packet. */
  badPackets: number;
  /** AUs lost to a gap in the middle of their fragments, too big, or empty. */
  droppedFrames: number;
}

export class AacDepacketizer {
  readonly counters: AacDepacketizerCounters = { frames: 0, badPackets: 0, droppedFrames: 0 };
  /** An AU being gathered from fragments, its timestamp and how much is there. */
  private partial: { data: Buffer; have: number; ts: number } | null = null;

  constructor(
    private readonly cfg: Pick<RtpAudioConfig, 'sizeLength' | 'indexLength' | 'indexDeltaLength'>,
    /** Called with a copy of each AU (the caller may keep it), its RTP timestamp. */
    private readonly onFrame: (rtpTimestamp: number, data: Buffer) => void,
    /** One AU's duration in the RTP clock (1024 when the clock is the sample rate). */
    private readonly frameTicks = AAC_FRAME_SAMPLES,
  ) {}

  /** One RTP payload, packets in sequence order; `gap`: packets were lost right before it. Never throws. */
  push(payload: Buffer, rtpTimestamp: number, marker: boolean, gap: boolean): void {
    if (gap && this.partial) {
      this.partial = null;
      this.counters.droppedFrames++;
    }
    if (payload.length < 2) return void this.counters.badPackets++;
    const headerBits = payload.readUInt16BE(0);
    const headerBytes = Math.ceil(headerBits / 8);
    if (2 + headerBytes > payload.length) return void this.counters.badPackets++;
    const sizes: number[] = [];
    const indexes: number[] = [];
    let bit = 16;
    const read = (n: number): number => {
      let v = 0;
      for (let i = 0; i < n; i++, bit++) v = (v << 1) | ((payload[bit >> 3]! >> (7 - (bit & 7))) & 1);
      return v;
    };
    const end = 16 + headerBits;
    let index = 0;
    while (bit + this.cfg.sizeLength <= end) {
      const size = read(this.cfg.sizeLength);
      const idxBits = sizes.length === 0 ? this.cfg.indexLength : this.cfg.indexDeltaLength;
      if (bit + idxBits > end) break;
      const idx = read(idxBits);
      index = sizes.length === 0 ? idx : index + idx + 1;
      sizes.push(size);
      indexes.push(index);
    }
    if (sizes.length === 0) return void this.counters.badPackets++;
    let at = 2 + headerBytes;
    if (this.partial && (sizes.length !== 1 || rtpTimestamp !== this.partial.ts)) {
      // A fragmented AU whose rest never came: what arrives now is new.
      this.partial = null;
      this.counters.droppedFrames++;
    }
    if (this.partial) {
      const p = this.partial;
      const take = Math.min(payload.length - at, p.data.length - p.have);
      payload.copy(p.data, p.have, at, at + take);
      p.have += take;
      if (p.have === p.data.length || marker) {
        this.partial = null;
        if (p.have === p.data.length) this.emit(p.ts, p.data);
        else this.counters.droppedFrames++;
      }
      return;
    }
    for (let i = 0; i < sizes.length; i++) {
      const size = sizes[i]!;
      const ts = (rtpTimestamp + indexes[i]! * this.frameTicks) >>> 0;
      if (size > MAX_AU_BYTES) {
        this.counters.droppedFrames++;
        return;
      }
      if (size === 0) {
        this.counters.droppedFrames++;
        continue;
      }
      if (at + size <= payload.length) {
        this.emit(ts, Buffer.from(payload.subarray(at, at + size)));
        at += size;
        continue;
      }
      if (sizes.length === 1 && !marker) {
        // The first fragment of an AU larger than the packet.
        const data = Buffer.allocUnsafe(size);
        const have = payload.copy(data, 0, at);
        this.partial = { data, have, ts };
        return;
      }
      this.counters.badPackets++;
      return;
    }
  }

  private emit(ts: number, data: Buffer): void {
    this.counters.frames++;
    this.onFrame(ts, data);
  }
}
