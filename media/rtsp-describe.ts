/**
 * One RTSP DESCRIBE, to learn which media a camera's stream has before ffmpeg starts:
 * ffmpeg refuses an output without streams, so the smart-stream (data) output may only
 * be added when the SDP announces a data track (`m=application`). DESCRIBE opens no
 * session (no SETUP/PLAY): the camera still sees one streaming session, ffmpeg's.
 * Basic and Digest authentication come from the URL's user info (media/rtsp-auth.ts).
 */
import { connect } from 'node:net';
import { pickChallenge, authorization } from './rtsp-auth.ts';

export interface SdpMedia {
  /** The `m=` media type: video, audio, application, text… */
  media: string;
  /** Encoding names of its payload types (`a=rtpmap`), upper-case. */
  encodings: string[];
}

const MAX_RESPONSE_BYTES = 256 * 1024;

/** The media sections of an SDP body. */
export function parseSdpMedia(sdp: string): SdpMedia[] {
  const out: SdpMedia[] = [];
  for (const line of sdp.split(/\r?\n/)) {
    const m = /^m=(\S+)\s/.exec(line);
    if (m) {
      out.push({ media: m[1]!.toLowerCase(), encodings: [] });
      continue;
    }
    const r = /^a=rtpmap:\d+\s+([^/\s]+)/.exec(line);
    if (r && out.length > 0) out[out.length - 1]!.encodings.push(r[1]!.toUpperCase());
  }
  return out;
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
  const cred = u.username ? { user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) } : null;
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
      socket.write(`DESCRIBE ${target} RTSP/1.0\r\nCSeq: ${cseq}\r\nAccept: application/sdp\r\nUser-Agent: ipcam-recorder\r\n${auth ? `Authorization: ${auth}\r\n` : ''}\r\n`);
      tryParse();
    });
  try {
    let res = await request();
    if (res.status === 401 && cred) {
      const ch = pickChallenge(res.headers.filter(([k]) => k === 'www-authenticate').map(([, v]) => v));
      if (ch) res = await request(authorization(ch, cred, 'DESCRIBE', target));
    }
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
      if (/answered 4\d\d/.test((err as Error).message)) break; // the camera said no: retrying will not help
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  }
  throw last;
}
