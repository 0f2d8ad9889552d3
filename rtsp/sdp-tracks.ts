/**
 * The media sections of a camera's SDP (RFC 4566) that our own RTSP clients set up:
 * per `m=` line its first payload type with encoding, clock rate and channels (from
 * `a=rtpmap`, else RFC 3551's static table), its `a=fmtp` parameters as written, and
 * its control URL resolved against the session's base (RFC 2326 C.1.1).
 * rtsp/rtsp-describe.ts's parseSdpMedia answers the coarser question ffmpeg's plan
 * asks (which encodings a camera has); this one is for depacketizing them.
 */

export interface SdpTrack {
  /** The `m=` media type, lower-case: video, audio, application… */
  media: string;
  payloadType: number;
  /** Upper-case encoding name (H264, H265, MPEG4-GENERIC, PCMA, MP2P…); '' when unknown. */
  encoding: string;
  clockRate: number;
  channels: number | null;
  /** The `a=fmtp:<pt>` value after the payload type, as written; '' without one. */
  fmtp: string;
  /** Absolute URL to SETUP this track. */
  control: string;
}

const STATIC: Record<number, { encoding: string; clockRate: number; channels?: number }> = {
  0: { encoding: 'PCMU', clockRate: 8000, channels: 1 },
  8: { encoding: 'PCMA', clockRate: 8000, channels: 1 },
  26: { encoding: 'JPEG', clockRate: 90000 },
  33: { encoding: 'MP2T', clockRate: 90000 },
};

const MAX_TRACKS = 64;

/** The tracks of `sdp`, in order; `base`: Content-Base (else the request URL). */
export function parseSdpTracks(sdp: string, base: string): SdpTrack[] {
  const tracks: SdpTrack[] = [];
  let sessionControl: string | null = null;
  for (const section of sdp.split(/\r?\n(?=m=)/)) {
    if (!section.startsWith('m=')) {
      sessionControl = /^a=control:(\S+)/im.exec(section)?.[1] ?? null;
      continue;
    }
    if (tracks.length >= MAX_TRACKS) break;
    const m = /^m=(\S+)\s+\S+\s+\S+\s+(\d{1,3})/.exec(section);
    if (!m) continue;
    const payloadType = Number(m[2]);
    const rtpmap = new RegExp(`^a=rtpmap:${payloadType}\\s+([^/\\s]+)(?:/(\\d+))?(?:/(\\d+))?`, 'im').exec(section);
    const known = STATIC[payloadType];
    const fmtp = new RegExp(`^a=fmtp:${payloadType}\\s+(.*)$`, 'im').exec(section)?.[1]?.trim() ?? '';
    const control = /^a=control:(\S+)/im.exec(section)?.[1] ?? '';
    tracks.push({
      media: m[1]!.toLowerCase(),
      payloadType,
      encoding: (rtpmap?.[1] ?? known?.encoding ?? '').toUpperCase(),
      clockRate: rtpmap?.[2] ? Number(rtpmap[2]) : (known?.clockRate ?? 90000),
      channels: rtpmap?.[3] ? Number(rtpmap[3]) : (known?.channels ?? null),
      fmtp,
      control: resolveControl(control, sessionControl, base),
    });
  }
  return tracks;
}

/** A track's control attribute as an absolute URL. */
function resolveControl(control: string, sessionControl: string | null, base: string): string {
  if (/^rtsps?:\/\//i.test(control)) return control;
  const root = sessionControl && /^rtsps?:\/\//i.test(sessionControl) ? sessionControl : base;
  if (control === '' || control === '*') return root;
  return `${root.replace(/\/$/, '')}/${control}`;
}
