/**
 * The sender report of an RTCP compound packet (RFC 3550 §6.4.1): which RTP timestamp
 * of the stream the sender's wall clock (NTP) time corresponds to. Two tracks of one
 * camera start their RTP timestamps at unrelated random values; their sender reports
 * put both on the camera's one clock, which is how audio is placed against video.
 */

export interface SenderReport {
  ssrc: number;
  /** The camera's wall clock at the report, in ms since 1970 (from NTP time). */
  ntpMs: number;
  /** The RTP timestamp of the same instant. */
  rtpTimestamp: number;
}

/** Seconds from 1900 (NTP) to 1970 (Unix). */
const NTP_UNIX_OFFSET_S = 2_208_988_800;

/** The first sender report in `packet` (a compound RTCP packet); null when it has none or is cut. */
export function readSenderReport(packet: Uint8Array): SenderReport | null {
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  for (let at = 0; at + 4 <= packet.length;) {
    if (packet[at]! >> 6 !== 2) return null;
    const type = packet[at + 1]!;
    const bytes = 4 * (view.getUint16(at + 2) + 1);
    if (at + bytes > packet.length) return null;
    if (type === 200 && bytes >= 28) {
      const seconds = view.getUint32(at + 8);
      const fraction = view.getUint32(at + 12);
      return {
        ssrc: view.getUint32(at + 4),
        ntpMs: (seconds - NTP_UNIX_OFFSET_S) * 1000 + (fraction / 2 ** 32) * 1000,
        rtpTimestamp: view.getUint32(at + 16),
      };
    }
    at += bytes;
  }
  return null;
}
