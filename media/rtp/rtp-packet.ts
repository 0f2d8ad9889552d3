/**
 * The fixed RTP header (RFC 3550 §5.1) of one packet, and where its payload lies.
 * Nothing is copied: `payload` is a view of the packet, valid as long as the packet's
 * memory is (a socket's reused read buffer: the call that received it).
 */

export interface RtpPacket {
  /** 16-bit sequence number. */
  seq: number;
  /** 32-bit media timestamp, in the payload type's clock (90 kHz for video). */
  timestamp: number;
  /** The marker bit: for video, the last packet of an access unit (RFC 6184 §5.1). */
  marker: boolean;
  payloadType: number;
  ssrc: number;
  /** The payload: CSRCs, the header extension and padding removed. */
  payload: Buffer;
}

/** The packet's header and payload; null when it is not RTP version 2 or is cut short. */
export function readRtp(p: Buffer): RtpPacket | null {
  if (p.length < 12 || p[0]! >> 6 !== 2) return null;
  let at = 12 + 4 * (p[0]! & 0x0f);
  if (p[0]! & 0x10) {
    if (p.length < at + 4) return null;
    at += 4 + 4 * p.readUInt16BE(at + 2);
  }
  let end = p.length;
  if (p[0]! & 0x20) end -= p[p.length - 1]!;
  if (at > end) return null;
  return {
    seq: p.readUInt16BE(2),
    timestamp: p.readUInt32BE(4),
    marker: (p[1]! & 0x80) !== 0,
    payloadType: p[1]! & 0x7f,
    ssrc: p.readUInt32BE(8),
    payload: p.subarray(at, end),
  };
}
