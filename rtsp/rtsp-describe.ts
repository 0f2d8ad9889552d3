/**
 * One RTSP DESCRIBE, to learn which media a camera's stream has before ffmpeg starts:
 * ffmpeg refuses an output without streams, so the smart-stream (data) output may only
 * be added when the SDP announces a data track (`m=application`); the audio encoding
 * decides whether audio is copied or made AAC (ffmpeg/audio-plan.ts), a JPEG video
 * track how fragments are cut. DESCRIBE opens no session (no SETUP/PLAY): the camera
 * still sees one streaming session, ffmpeg's, and the RTP transport (TCP, UDP, HTTP
 * tunnel) plays no part in it, so a camera that offers only UDP answers it as any.
 * The request, its login (Basic and Digest from the URL's user info) and its timeouts
 * are rtsp/rtsp-connection.ts's; the errors stay this module's own (describeFailure).
 */
import { RtspAuthError } from './rtsp-auth.ts';
import { openRtsp, requestUrl, type MakeRtspError } from './rtsp-connection.ts';
import { parseSdp, staticFormat, type SdpFormat, type SdpSection } from './sdp-tracks.ts';

export interface SdpMedia {
  /** The `m=` media type: video, audio, application, text… */
  media: string;
  /**
   * Encoding names of its payload types, upper-case, in the `m=` line's order: from
   * `a=rtpmap`, or for a static payload type without one (cameras often send `m=audio
   * 0 RTP/AVP 8` alone) its RFC 3551 name.
   */
  encodings: string[];
  /** Clock rate and channels of the first payload type when its rtpmap says them (e.g. OPUS/48000/2). */
  clockRate?: number;
  channels?: number;
}

/** The media sections of an SDP body (rtsp/sdp-tracks.ts reads them). */
export function parseSdpMedia(sdp: string): SdpMedia[] {
  return parseSdp(sdp).sections.map(toMedia);
}

/** A section's formats: the listed payload types', then those of rtpmap lines for types the m= line lacks (malformed, but seen). */
function toMedia(s: SdpSection): SdpMedia {
  // The last rtpmap of a payload type wins, in the place of its first.
  const rtpmap = new Map(s.rtpmap.map((r) => [r.payloadType, r.format]));
  const listed = s.formats.filter((x) => /^\d{1,3}$/.test(x)).map(Number);
  const formats: SdpFormat[] = [];
  for (const pt of listed) {
    // A whole rtpmap or the static format, not a mix: the rates are the rtpmap's to say.
    const f = rtpmap.get(pt) ?? staticFormat(pt);
    if (f) formats.push(f);
  }
  for (const [pt, f] of rtpmap) if (!listed.includes(pt)) formats.push(f);
  const first = formats[0];
  return {
    media: s.media,
    encodings: formats.map((f) => f.encoding),
    ...(first?.clockRate !== undefined ? { clockRate: first.clockRate } : {}),
    ...(first?.channels !== undefined ? { channels: first.channels } : {}),
  };
}

export function hasDataTrack(media: SdpMedia[]): boolean {
  return media.some((m) => m.media === 'application');
}

/**
 * DESCRIBE's errors, as its callers tell them apart: a refused login is an RtspAuthError
 * (the attempt fails with it, unretried); an answer other than 200 says its status
 * (describeWithRetry retries a 5xx, not a 4xx); the rest are plain Errors (less is
 * known: ffmpeg reports the real problem).
 */
function describeFailure(timeoutMs: number): MakeRtspError {
  return (kind, message, status) => {
    if (kind === 'AUTH') return new RtspAuthError(message);
    if (status !== null) return new Error(`DESCRIBE answered ${status}`);
    if (kind === 'TIMEOUT') return new Error(`no DESCRIBE answer within ${timeoutMs} ms`);
    return new Error(message);
  };
}

const ignoreFrames = (): void => undefined; // DESCRIBE opens no session: no interleaved data comes

/** DESCRIBE `url` (rtsp:// only); answers the media sections, or throws on any failure. */
export async function describeRtsp(url: string, timeoutMs: number): Promise<SdpMedia[]> {
  const u = new URL(url);
  if (u.protocol !== 'rtsp:') throw new Error(`DESCRIBE needs rtsp://, got ${u.protocol}`);
  const conn = await openRtsp(u, timeoutMs, ignoreFrames, describeFailure(timeoutMs));
  try {
    const res = await conn.request('DESCRIBE', requestUrl(u), timeoutMs, { Accept: 'application/sdp' });
    return parseSdpMedia(res.body);
  } finally {
    conn.end(new Error('DESCRIBE done'));
  }
}

/**
 * DESCRIBE with a few retries: a camera (and GStreamer's server while it prepares a
 * shared media) may answer 5xx or drop the first connection; the retries cost time
 * only when that happens, before ffmpeg starts.
 */
export async function describeWithRetry(url: string, timeoutMs: number, attempts = 3, pauseMs = 700): Promise<SdpMedia[]> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await describeRtsp(url, timeoutMs);
    } catch (err) {
      last = err;
      if (err instanceof RtspAuthError || /answered 4\d\d/.test((err as Error).message)) break; // the camera said no: retrying will not help
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  }
  throw last;
}
