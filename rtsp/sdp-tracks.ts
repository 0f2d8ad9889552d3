/**
 * The media sections of a camera's SDP (RFC 4566), read once (`parseSdp`): per `m=`
 * line its media type and formats, with the `a=rtpmap`, `a=fmtp` and `a=control`
 * lines that follow it, and the session's own control. Two views of it:
 * - `parseSdpTracks` (here), for depacketizing in our own RTSP clients: per section its
 *   first payload type with encoding, clock rate and channels (from `a=rtpmap`, else
 *   RFC 3551's static table), its `a=fmtp` parameters as written, and its control URL
 *   resolved against the session's base (RFC 2326 C.1.1);
 * - rtsp/rtsp-describe.ts's `parseSdpMedia`, the coarser question ffmpeg's plan asks:
 *   which encodings each section has.
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

/** One payload format: an `a=rtpmap` line's, or a static payload type's. */
export interface SdpFormat {
  /** Upper-case encoding name. */
  encoding: string;
  clockRate?: number;
  channels?: number;
}

/** One `m=` section as written. */
export interface SdpSection {
  /** The media type, lower-case. */
  media: string;
  /** The `m=` line's formats after the protocol, as written (RTP payload types for RTP/AVP). */
  formats: string[];
  /** Its `a=rtpmap` lines, in order (a payload type may repeat, or be one `formats` lacks). */
  rtpmap: { payloadType: number; format: SdpFormat }[];
  /** Its `a=fmtp` lines, in order: the value after the payload type, trimmed. */
  fmtp: { payloadType: number; value: string }[];
  /** Its first `a=control` value; '' without one. */
  control: string;
}

export interface Sdp {
  /** The session-level `a=control` (before the first `m=`), else null. */
  sessionControl: string | null;
  sections: SdpSection[];
}

/** RFC 3551 static payload types a camera may send without an rtpmap line (`m=audio 0 RTP/AVP 8` alone). */
const STATIC_PAYLOAD_TYPES: Record<number, SdpFormat> = {
  0: { encoding: 'PCMU', clockRate: 8000, channels: 1 },
  3: { encoding: 'GSM', clockRate: 8000, channels: 1 },
  4: { encoding: 'G723', clockRate: 8000, channels: 1 },
  8: { encoding: 'PCMA', clockRate: 8000, channels: 1 },
  9: { encoding: 'G722', clockRate: 8000, channels: 1 },
  10: { encoding: 'L16', clockRate: 44100, channels: 2 },
  11: { encoding: 'L16', clockRate: 44100, channels: 1 },
  14: { encoding: 'MPA', clockRate: 90000 },
  18: { encoding: 'G729', clockRate: 8000, channels: 1 },
  26: { encoding: 'JPEG', clockRate: 90000 },
  32: { encoding: 'MPV', clockRate: 90000 },
  33: { encoding: 'MP2T', clockRate: 90000 },
  34: { encoding: 'H263', clockRate: 90000 },
};

/** The RFC 3551 format of a static payload type, if it is one. */
export function staticFormat(payloadType: number): SdpFormat | undefined {
  return STATIC_PAYLOAD_TYPES[payloadType];
}

/** Sections past this many are not read: no camera has them, a broken or hostile SDP may. */
const MAX_SECTIONS = 64;

/** The session control and media sections of `sdp`, in order; a malformed `m=` line's section is left out. */
export function parseSdp(sdp: string): Sdp {
  const parsed: Sdp = { sessionControl: null, sections: [] };
  let inSession = true;
  let section: SdpSection | null = null;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) {
      inSession = false;
      section = mediaSection(line);
      if (section && parsed.sections.length >= MAX_SECTIONS) break;
      if (section) parsed.sections.push(section);
    } else if (inSession) {
      parsed.sessionControl ??= controlOf(line);
    } else if (section) {
      addAttribute(section, line);
    }
  }
  return parsed;
}

/** The section an `m=<media> <port> <proto> <fmt>…` line starts; null when it is not one. */
function mediaSection(line: string): SdpSection | null {
  const m = /^m=(\S+)\s+\S+\s+\S+((?:\s+\S+)*)/.exec(line);
  if (!m) return null;
  const formats = (m[2] ?? '').split(/\s+/).filter((x) => x !== '');
  return { media: m[1]!.toLowerCase(), formats, rtpmap: [], fmtp: [], control: '' };
}

function controlOf(line: string): string | null {
  return /^a=control:(\S+)/i.exec(line)?.[1] ?? null;
}

/** Records `line` in `section` if it is one of the attributes we read. */
function addAttribute(section: SdpSection, line: string): void {
  const rtpmap = /^a=rtpmap:(\d+)\s+([^/\s]+)(?:\/(\d+))?(?:\/(\d+))?/i.exec(line);
  if (rtpmap) {
    const format: SdpFormat = {
      encoding: rtpmap[2]!.toUpperCase(),
      ...(rtpmap[3] ? { clockRate: Number(rtpmap[3]) } : {}),
      ...(rtpmap[4] ? { channels: Number(rtpmap[4]) } : {}),
    };
    section.rtpmap.push({ payloadType: Number(rtpmap[1]), format });
    return;
  }
  const fmtp = /^a=fmtp:(\d+)\s+(.*)$/i.exec(line);
  if (fmtp) {
    section.fmtp.push({ payloadType: Number(fmtp[1]), value: fmtp[2]!.trim() });
    return;
  }
  section.control ||= controlOf(line) ?? '';
}

/** The tracks of `sdp`, in order; `base`: Content-Base (else the request URL). */
export function parseSdpTracks(sdp: string, base: string): SdpTrack[] {
  const { sessionControl, sections } = parseSdp(sdp);
  return sections.flatMap((s) => {
    const track = toTrack(s, resolveControl(s.control, sessionControl, base));
    return track ? [track] : [];
  });
}

/** A section as a track of its first payload type; null when the `m=` line has none. */
function toTrack(s: SdpSection, control: string): SdpTrack | null {
  const pt = /^\d{1,3}/.exec(s.formats[0] ?? '');
  if (!pt) return null;
  const payloadType = Number(pt[0]);
  const mapped = s.rtpmap.find((r) => r.payloadType === payloadType)?.format;
  const known = staticFormat(payloadType);
  // Field by field: an rtpmap without a rate (`a=rtpmap:8 PCMA`) still has the static one.
  return {
    media: s.media,
    payloadType,
    encoding: mapped?.encoding ?? known?.encoding ?? '',
    clockRate: mapped?.clockRate ?? known?.clockRate ?? 90000,
    channels: mapped?.channels ?? known?.channels ?? null,
    fmtp: s.fmtp.find((f) => f.payloadType === payloadType)?.value ?? '',
    control,
  };
}

/** A track's control attribute as an absolute URL. */
function resolveControl(control: string, sessionControl: string | null, base: string): string {
  if (/^rtsps?:\/\//i.test(control)) return control;
  const root = sessionControl && /^rtsps?:\/\//i.test(sessionControl) ? sessionControl : base;
  if (control === '' || control === '*') return root;
  return `${root.replace(/\/$/, '')}/${control}`;
}
