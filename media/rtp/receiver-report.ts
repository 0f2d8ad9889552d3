/**
 * What a receiver tells an RTP sender (RFC 3550 §6.4.2): per stream, the share of
 * packets lost since the last report, the total lost, the highest sequence number
 * received, and when the last sender report came. Cameras (and servers like
 * GStreamer's) may end a UDP session whose receiver stays silent; ffmpeg sends these,
 * and so does our client, every RECEIVER_REPORT_MS.
 *
 * `ReceptionStats` counts one stream's packets as they arrive (before reordering:
 * duplicates and reordering do not change the highest number, and `expected` comes
 * from it); `receiverReport` writes the compound packet, RR + SDES CNAME, into a
 * Buffer of its own (one per report, a few a minute).
 */

export const RECEIVER_REPORT_MS = 5000;

export class ReceptionStats {
  /** The sender's SSRC, from its packets; null before any. */
  ssrc: number | null = null;
  received = 0;
  private base = -1;
  private maxSeq = 0;
  private cycles = 0;
  private expectedPrior = 0;
  private receivedPrior = 0;
  /** Middle 32 bits of the last sender report's NTP time, and when it came (ms). */
  private lastSr = 0;
  private lastSrAt = 0;

  packet(seq: number, ssrc: number): void {
    this.ssrc = ssrc;
    this.received++;
    if (this.base < 0) {
      this.base = seq;
      this.maxSeq = seq;
      return;
    }
    const ahead = (seq - this.maxSeq + 0x10000) & 0xffff;
    if (ahead > 0 && ahead < 0x8000) {
      if (seq < this.maxSeq) this.cycles += 0x10000;
      this.maxSeq = seq;
    }
  }

  /** A sender report of this stream (its RTCP packet), received at `nowMs`. */
  senderReport(rtcp: Buffer, nowMs: number): void {
    for (let at = 0; at + 20 <= rtcp.length;) {
      const bytes = 4 * (rtcp.readUInt16BE(at + 2) + 1);
      if (rtcp[at + 1] === 200) {
        this.lastSr = rtcp.readUInt32BE(at + 10);
        this.lastSrAt = nowMs;
        return;
      }
      at += bytes;
    }
  }

  /** The report block of this stream, and the counts it advances. */
  block(nowMs: number): { fractionLost: number; cumulativeLost: number; extendedMax: number; lsr: number; dlsr: number } | null {
    if (this.ssrc === null || this.base < 0) return null;
    const extendedMax = this.cycles + this.maxSeq;
    const expected = extendedMax - this.base + 1;
    const cumulativeLost = Math.max(0, Math.min(0x7fffff, expected - this.received));
    const expectedInterval = expected - this.expectedPrior;
    const lostInterval = expectedInterval - (this.received - this.receivedPrior);
    this.expectedPrior = expected;
    this.receivedPrior = this.received;
    const fractionLost = expectedInterval > 0 && lostInterval > 0 ? Math.min(255, Math.floor((lostInterval * 256) / expectedInterval)) : 0;
    const dlsr = this.lastSrAt > 0 ? Math.floor(((nowMs - this.lastSrAt) * 65536) / 1000) >>> 0 : 0;
    return { fractionLost, cumulativeLost, extendedMax: extendedMax >>> 0, lsr: this.lastSr, dlsr };
  }
}

/** RR (one report block) + SDES CNAME, as one compound RTCP packet; null before the stream's first packet. */
export function receiverReport(ourSsrc: number, stats: ReceptionStats, cname: string, nowMs: number): Buffer | null {
  const block = stats.block(nowMs);
  if (!block || stats.ssrc === null) return null;
  const name = Buffer.from(cname, 'utf8').subarray(0, 255);
  const sdesBytes = Math.ceil((4 + 4 + 2 + name.length + 1) / 4) * 4;
  const out = Buffer.alloc(32 + sdesBytes);
  out[0] = 0x81; // V=2, one report block
  out[1] = 201;
  out.writeUInt16BE(32 / 4 - 1, 2);
  out.writeUInt32BE(ourSsrc >>> 0, 4);
  out.writeUInt32BE(stats.ssrc >>> 0, 8);
  out.writeUInt32BE(((block.fractionLost << 24) | block.cumulativeLost) >>> 0, 12);
  out.writeUInt32BE(block.extendedMax, 16);
  out.writeUInt32BE(0, 20); // jitter: not estimated
  out.writeUInt32BE(block.lsr >>> 0, 24);
  out.writeUInt32BE(block.dlsr, 28);
  out[32] = 0x81; // V=2, one chunk
  out[33] = 202;
  out.writeUInt16BE(sdesBytes / 4 - 1, 34);
  out.writeUInt32BE(ourSsrc >>> 0, 36);
  out[40] = 1; // CNAME
  out[41] = name.length;
  name.copy(out, 42);
  // The rest is zero: the END item and the padding to a 32-bit boundary.
  return out;
}
