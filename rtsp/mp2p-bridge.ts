/**
 * GB28181-style cameras send MPEG-PS over RTP (`a=rtpmap:96 MP2P/90000`), which
 * ffmpeg 5.1's RTSP client does not depacketize (the stream shows as "unknown codec").
 * This bridge is a minimal RTSP client for such a camera: DESCRIBE, SETUP, PLAY,
 * GET_PARAMETER keep-alives and TEARDOWN; the RTP payloads of the MP2P stream are the
 * program stream byte for byte, in sequence order, and go to the caller's sink
 * (ingest/mp2p-ingest.ts reads them with our own PS reader; no ffmpeg).
 *
 * The session itself (login, transport and its `auto` fallback, keep-alives, UDP
 * reordering, pause and resume, TEARDOWN) is our RTSP client's, rtsp/rtp-session.ts;
 * this module picks the MP2P track and makes its failures Mp2pBridgeErrors: a refused
 * login MP2P_AUTH (naming user and host, never the password), a refused transport or
 * `http` MP2P_TRANSPORT, a session without an MP2P stream MP2P_NO_STREAM, a silent
 * camera MP2P_TIMEOUT, other RTSP errors MP2P_RTSP, no connection MP2P_CONNECT.
 *
 * The sink is called synchronously per RTP packet with a copy of its payload (the PS
 * reader keeps what it is handed until its GOP is cut). A gap in RTP sequence numbers
 * is flagged to the sink with the packet after it, so the reader drops its partial
 * packet and resynchronises.
 */
import { openRtsp, requestUrl, type MakeRtspError } from './rtsp-connection.ts';
import { startRtpSession, type RtpSession } from './rtp-session.ts';
import { parseSdpTracks } from './sdp-tracks.ts';
import type { TransportSetting } from './rtsp-transport.ts';
import { redactText } from '../lib/redact.ts';

export type Mp2pBridgeErrorCode = 'MP2P_CONNECT' | 'MP2P_RTSP' | 'MP2P_NO_STREAM' | 'MP2P_AUTH' | 'MP2P_TIMEOUT' | 'MP2P_TRANSPORT';

export class Mp2pBridgeError extends Error {
  constructor(
    readonly code: Mp2pBridgeErrorCode,
    message: string,
    /** The RTSP status of a refused request (MP2P_RTSP, MP2P_AUTH, MP2P_TRANSPORT); null otherwise. */
    readonly status: number | null = null,
  ) {
    super(redactText(message));
    this.name = 'Mp2pBridgeError';
  }
}

const mp2pError: MakeRtspError = (kind, message, status) => new Mp2pBridgeError(`MP2P_${kind}`, message.replace(/^RTSP_AUTH/, 'MP2P_AUTH'), status);

/** The MP2P media of an SDP: payload type and control URL; null when there is none. */
export function findMp2p(sdp: string, base: string): { payloadType: number; control: string } | null {
  const track = parseSdpTracks(sdp, base).find((t) => t.encoding === 'MP2P' && t.clockRate === 90000);
  return track ? { payloadType: track.payloadType, control: track.control } : null;
}

/** Whether the camera's session carries MPEG-PS over RTP (one DESCRIBE). */
export async function isMp2pCamera(cameraUrl: string, timeoutMs: number): Promise<boolean> {
  const url = new URL(cameraUrl);
  const rtspUrl = requestUrl(url);
  const rtsp = await openRtsp(url, timeoutMs, () => undefined, mp2pError);
  try {
    const r = await rtsp.request('DESCRIBE', rtspUrl, timeoutMs, { Accept: 'application/sdp' });
    return findMp2p(r.body, r.headers.get('content-base') ?? rtspUrl) !== null;
  } finally {
    rtsp.sock.destroy();
  }
}

export interface Mp2pSink {
  /**
   * The program-stream bytes of one RTP packet, in sequence order. `gap`: packets are
   * missing (or out of order) right before this one.
   */
  onBytes(bytes: Buffer, gap: boolean): void;
}

export interface Mp2pBridgeOptions {
  /** The camera's transport setting (default `auto`); `http` is refused (MP2P_TRANSPORT). */
  transport?: TransportSetting;
  /** Names the camera across attempts for what `auto` learns (default the URL). */
  memoryKey?: string;
}

/** The running stream: RTP packets lost, the transport taken, `ended`, pause/resume and close (rtsp/rtp-session.ts). */
export type Mp2pBridge = Omit<RtpSession<{ control: string }>, 'tracks'>;

/** Connects to the camera and starts the stream; resolves once PLAY succeeded. */
export async function startMp2pBridge(cameraUrl: string, timeoutMs: number, sink: Mp2pSink, opts: Mp2pBridgeOptions = {}): Promise<Mp2pBridge> {
  const url = new URL(cameraUrl);
  if (opts.transport === 'http')
    throw new Mp2pBridgeError(
      'MP2P_TRANSPORT',
      `transport "http" (RTSP tunnelled in HTTP) is not supported for MP2P cameras (${url.host}): set transport to auto, tcp or udp`,
    );
  const choose = (sdp: string, base: string): { control: string }[] => {
    const media = findMp2p(sdp, base);
    if (!media) throw new Mp2pBridgeError('MP2P_NO_STREAM', `${url.host}${url.pathname} has no MP2P/90000 stream`);
    return [media];
  };
  return startRtpSession(
    cameraUrl,
    timeoutMs,
    choose,
    // A copy: over TCP the packet is a view of the connection's reused read buffer.
    { onPacket: (_track, packet, gap) => sink.onBytes(Buffer.from(packet.payload), gap) },
    { ...(opts.transport ? { transport: opts.transport } : {}), ...(opts.memoryKey ? { memoryKey: opts.memoryKey } : {}), fail: mp2pError },
  );
}
