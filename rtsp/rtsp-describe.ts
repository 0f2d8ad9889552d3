/**
 * One RTSP DESCRIBE, to learn which media a camera's stream has before ffmpeg starts:
 * ffmpeg refuses an output without streams, so the smart-stream (data) output may only
 * be added when the SDP announces a data track (`m=application`); the audio encoding
 * decides whether audio is copied or made AAC (ffmpeg/audio-plan.ts), a JPEG video
 * track how fragments are cut. DESCRIBE opens no session (no SETUP/PLAY): the camera
 * still sees one streaming session, ffmpeg's, and the RTP transport (TCP, UDP, HTTP
 * tunnel) plays no part in it, so a camera that offers only UDP answers it as any.
 * Basic and Digest authentication come from the URL's user info (rtsp/rtsp-auth.ts).
 */
import { connect } from 'node:net';
import { pickChallenge, authorization, refusalReason, urlCredentials, RtspAuthError, type Challenge } from './rtsp-auth.ts';

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

/** RFC 3551 static payload types a camera may send without an rtpmap line. */
const STATIC_PAYLOAD_TYPES: Record<number, { encoding: string; clockRate: number; channels?: number }> = {
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

const MAX_RESPONSE_BYTES = 256 * 1024;
const MAX_SDP_MEDIA = 64;

/** The media sections of an SDP body. */
export function parseSdpMedia(sdp: string): SdpMedia[] {
  interface Section {
    media: string;
    payloadTypes: number[];
    rtpmap: Map<number, { encoding: string; clockRate?: number; channels?: number }>;
  }
  const sections: Section[] = [];
  for (const line of sdp.split(/\r?\n/)) {
    const m = /^m=(\S+)\s+\S+\s+\S+((?:\s+\S+)*)/.exec(line);
    if (m) {
      if (sections.length >= MAX_SDP_MEDIA) break;
      const payloadTypes = (m[2] ?? '')
        .trim()
        .split(/\s+/)
        .filter((x) => /^\d{1,3}$/.test(x))
        .map(Number);
      sections.push({ media: m[1]!.toLowerCase(), payloadTypes, rtpmap: new Map() });
      continue;
    }
    const r = /^a=rtpmap:(\d+)\s+([^/\s]+)(?:\/(\d+))?(?:\/(\d+))?/.exec(line);
    const section = sections[sections.length - 1];
    if (r && section) {
      section.rtpmap.set(Number(r[1]), {
        encoding: r[2]!.toUpperCase(),
        ...(r[3] ? { clockRate: Number(r[3]) } : {}),
        ...(r[4] ? { channels: Number(r[4]) } : {}),
      });
    }
  }
  return sections.map((s) => {
    const formats: { encoding: string; clockRate?: number; channels?: number }[] = [];
    for (const pt of s.payloadTypes) {
      const f = s.rtpmap.get(pt) ?? STATIC_PAYLOAD_TYPES[pt];
      if (f) formats.push(f);
    }
    // rtpmap lines for payload types the m= line does not list (malformed, but seen): kept.
    for (const [pt, f] of s.rtpmap) if (!s.payloadTypes.includes(pt)) formats.push(f);
    const first = formats[0];
    return {
      media: s.media,
      encodings: formats.map((f) => f.encoding),
      ...(first?.clockRate !== undefined ? { clockRate: first.clockRate } : {}),
      ...(first?.channels !== undefined ? { channels: first.channels } : {}),
    };
  });
}

export function hasDataTrack(media: SdpMedia[]): boolean {
  return media.some((m) => m.media === 'application');
}

interface Response {
  status: number;
  headers: [string, string][];
  body: string;
}

/** DESCRIBE `url` (rtsp:// only); answers the media sections, or throws on any failure. */
export async function describeRtsp(url: string, timeoutMs: number): Promise<SdpMedia[]> {
  const u = new URL(url);
  if (u.protocol !== 'rtsp:') throw new Error(`DESCRIBE needs rtsp://, got ${u.protocol}`);
  const cred = urlCredentials(u);
  u.username = '';
  u.password = '';
  const target = u.toString();
  const socket = connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 554) });
  socket.setTimeout(timeoutMs);
  let buf = Buffer.alloc(0);
  let waiting: { resolve: (r: Response) => void; reject: (e: Error) => void } | null = null;
  let failure: Error | null = null;
  const fail = (err: Error): void => {
    failure ??= err;
    waiting?.reject(failure);
    waiting = null;
    socket.destroy();
  };
  const tryParse = (): void => {
    if (!waiting) return;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buf.length > MAX_RESPONSE_BYTES) fail(new Error('RTSP response headers too large'));
      return;
    }
    const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = /^RTSP\/1\.\d (\d{3})/.exec(lines[0] ?? '');
    if (!status) return fail(new Error(`not an RTSP response: ${JSON.stringify(lines[0]?.slice(0, 80))}`));
    const headers = lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()] as [string, string]);
    const len = Number(headers.find(([k]) => k === 'content-length')?.[1] ?? 0);
    if (!Number.isFinite(len) || len < 0 || len > MAX_RESPONSE_BYTES) return fail(new Error('bad Content-Length'));
    if (buf.length < end + 4 + len) return;
    const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
    buf = buf.subarray(end + 4 + len);
    const w = waiting;
    waiting = null;
    w.resolve({ status: Number(status[1]), headers, body });
  };
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    tryParse();
  });
  socket.on('timeout', () => fail(new Error(`no DESCRIBE answer within ${timeoutMs} ms`)));
  socket.on('error', (err) => fail(err));
  socket.on('close', () => fail(new Error('connection closed')));
  let cseq = 0;
  const request = (auth?: string): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      if (failure) return reject(failure);
      waiting = { resolve, reject };
      cseq++;
      socket.write(
        `DESCRIBE ${target} RTSP/1.0\r\nCSeq: ${cseq}\r\nAccept: application/sdp\r\nUser-Agent: ipcam-recorder\r\n${auth ? `Authorization: ${auth}\r\n` : ''}\r\n`,
      );
      tryParse();
    });
  try {
    let res = await request();
    let ch: Challenge | null = null;
    let offered: string[] = [];
    if (res.status === 401) {
      offered = res.headers.filter(([k]) => k === 'www-authenticate').map(([, v]) => v);
      ch = pickChallenge(offered);
      if (ch && cred) res = await request(authorization(ch, cred, 'DESCRIBE', target));
    }
    // The login was refused (or cannot be made): a typed error saying why, no password.
    if (res.status === 401) throw new RtspAuthError(refusalReason(u.host, 'DESCRIBE', cred, ch, offered));
    if (res.status !== 200) throw new Error(`DESCRIBE answered ${res.status}`);
    return parseSdpMedia(res.body);
  } finally {
    socket.removeAllListeners('close');
    socket.destroy();
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
