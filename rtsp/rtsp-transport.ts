/**
 * Which lower transport an ingest attempt asks the camera for (ffmpeg's
 * `-rtsp_transport`), from the camera's `transport` setting:
 * - `tcp` (RTP interleaved in the RTSP connection), `udp`, `http` (RTSP and RTP
 *   tunnelled in HTTP on the URL's port, for cameras behind HTTP-only paths): exactly that.
 * - `auto` (default): TCP, which survives loss and NAT; when the camera refuses it
 *   (`461 Unsupported transport` to SETUP, as cameras that offer only UDP answer), the
 *   next attempts for that URL use UDP. Should the camera later refuse UDP the same way,
 *   auto goes back to TCP. What was learnt lives as long as the process.
 * The MP2P bridge (rtsp/mp2p-bridge.ts) is steered by the same setting and memory, for
 * `tcp` and `udp`; under `auto` it also retries a SETUP refused 461 with the other
 * transport at once, on the same connection. It does not tunnel in HTTP.
 */

export type RtspTransport = 'tcp' | 'udp' | 'http';
export type TransportSetting = 'auto' | RtspTransport;

export const TRANSPORT_SETTINGS: readonly TransportSetting[] = ['auto', 'tcp', 'udp', 'http'];

/** URLs whose camera refused TCP (auto only). */
const tcpRefused = new Set<string>();

/** The camera's setting (configs stored before the field existed have none: auto). */
export function transportSetting(camera: { transport?: unknown }): TransportSetting {
  const v = camera.transport;
  return TRANSPORT_SETTINGS.includes(v as TransportSetting) ? (v as TransportSetting) : 'auto';
}

/** The transport of the next attempt for `url`. */
export function chooseTransport(url: string, setting: TransportSetting): RtspTransport {
  if (setting !== 'auto') return setting;
  return tcpRefused.has(url) ? 'udp' : 'tcp';
}

/** ffmpeg's words for a camera refusing the transport asked for in SETUP. */
const REFUSED = /\b461\b|Unsupported transport|Nonmatching transport/i;

export function transportRefused(stderr: string[]): boolean {
  return stderr.some((l) => REFUSED.test(l));
}

/**
 * Learns from an attempt that ended before any video: under `auto`, a camera that
 * refused the transport used gets the other one next time.
 */
export function noteTransportOutcome(
  url: string,
  setting: TransportSetting,
  used: RtspTransport,
  outcome: { gotVideo: boolean; requested: boolean; stderr: string[] },
): boolean {
  if (setting !== 'auto' || outcome.gotVideo || outcome.requested || !transportRefused(outcome.stderr)) return false;
  noteRefused(url, used);
  return true;
}

/** The camera at `url` refused `used` in SETUP (461): under auto, its next attempts use the other. */
export function noteRefused(url: string, used: RtspTransport): void {
  if (used === 'tcp') tcpRefused.add(url);
  else if (used === 'udp') tcpRefused.delete(url);
}

/** Forgets what was learnt (tests). */
export function resetTransportMemory(): void {
  tcpRefused.clear();
}
