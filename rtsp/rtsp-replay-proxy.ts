/**
 * A loopback RTSP proxy that lets ffmpeg pull ONVIF replay from a camera's edge
 * storage. ffmpeg cannot send `Require: onvif-replay`, `Range: clock=…` or
 * `Rate-Control: no` (docs/design/toolchain.md), so it connects here instead; we forward its
 * requests to the camera with those headers added and hand the camera's answers and
 * interleaved RTP back unchanged, so the normal ingest path (ffmpeg → fMP4 splitter)
 * depacketizes and muxes (docs/design/backfill.md says why this and not our own client).
 *
 * Per request (ffmpeg → camera): the URL's scheme/host/port become the camera's
 * (path and query are the camera's already); CSeq is renumbered on our own sequence
 * (a 401 retry adds a request ffmpeg never sent); our Authorization replaces ffmpeg's
 * (ffmpeg has no credentials, and Digest covers the URL, which we rewrite); DESCRIBE,
 * SETUP and PLAY get `Require: onvif-replay`; PLAY's `Range` becomes the clock range
 * asked for, plus `Rate-Control: no` when asked. Per response: CSeq back to ffmpeg's;
 * absolute URLs (Content-Base, Content-Location, RTP-Info, SDP `a=control`) back to
 * ours. What the camera said is kept in `report`: the PLAY reply's clock range (the
 * interval it says it sends), the ONVIF time of its first RTP packet, and any refusal.
 *
 * Bounds: one client; one upstream connection; parser buffers are capped
 * (rtsp/rtsp-message.ts); `close()` destroys both sockets and the server.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { authorization, pickChallenge, type Challenge, type Credentials } from './rtsp-auth.ts';
import {
  RtspStreamParser,
  formatClockTime,
  header,
  isResponse,
  onvifPacketTimeMs,
  parseClockRange,
  requestLine,
  serialize,
  setHeader,
  statusCode,
  type RtspMessage,
} from './rtsp-message.ts';

export interface ReplayRequest {
  startMs: number;
  endMs: number;
  /** `Rate-Control: no`: the camera sends as fast as it can instead of in real time. */
  rateControl: boolean;
}

export interface ReplayReport {
  /** The clock range of the camera's PLAY reply (what it says it sends). */
  playRange: { startMs: number; endMs: number | null } | null;
  /** ONVIF replay extension time of the first RTP packet, when the camera sends it. */
  firstPacketMs: number | null;
  /** The first non-2xx answer to DESCRIBE/SETUP/PLAY (after auth), if any. */
  refused: { method: string; status: number; reason: string } | null;
  /** The camera could not be reached, or spoke something that is not RTSP. */
  upstreamError: string | null;
}

export interface ReplayProxy {
  /** What ffmpeg opens: rtsp://127.0.0.1:<port><camera path and query>. */
  readonly url: string;
  readonly report: ReplayReport;
  close(): void;
}

export interface RewriteContext {
  /** `rtsp://127.0.0.1:<port>`: how ffmpeg addresses us. */
  proxyBase: string;
  /** `rtsp://host:port` of the camera, without credentials. */
  cameraBase: string;
  /** null: no ONVIF headers (a camera whose URL template carries the interval). */
  replay: ReplayRequest | null;
}

const REPLAY_METHODS = new Set(['DESCRIBE', 'SETUP', 'PLAY']);

/** Rewrites one request of ffmpeg for the camera (CSeq and Authorization are the caller's). */
export function rewriteRequest(m: RtspMessage, ctx: RewriteContext): RtspMessage {
  const { method, url } = requestLine(m);
  const out: RtspMessage = { startLine: `${method} ${swapBase(url, ctx.proxyBase, ctx.cameraBase)} RTSP/1.0`, headers: [...m.headers], body: m.body };
  setHeader(out, 'Authorization', undefined);
  if (ctx.replay && REPLAY_METHODS.has(method)) {
    const required = header(out, 'Require');
    if (!required?.split(',').some((r) => r.trim() === 'onvif-replay')) setHeader(out, 'Require', required ? `${required}, onvif-replay` : 'onvif-replay');
    if (method === 'PLAY') {
      setHeader(out, 'Range', `clock=${formatClockTime(ctx.replay.startMs)}-${formatClockTime(ctx.replay.endMs)}`);
      setHeader(out, 'Rate-Control', ctx.replay.rateControl ? undefined : 'no');
      setHeader(out, 'Scale', undefined);
      setHeader(out, 'Speed', undefined);
    }
  }
  return out;
}

/** Rewrites one response of the camera for ffmpeg (CSeq is the caller's). */
export function rewriteResponse(m: RtspMessage, ctx: RewriteContext): RtspMessage {
  const out: RtspMessage = { startLine: m.startLine, headers: m.headers.map(([n, v]) => [n, swapAll(v, ctx.cameraBase, ctx.proxyBase)]), body: m.body };
  const type = header(m, 'Content-Type') ?? '';
  if (m.body.length > 0 && type.toLowerCase().startsWith('application/sdp')) {
    out.body = Buffer.from(swapAll(m.body.toString('latin1'), ctx.cameraBase, ctx.proxyBase), 'latin1');
  }
  return out;
}

function swapBase(url: string, from: string, to: string): string {
  return url.toLowerCase().startsWith(from.toLowerCase()) ? to + url.slice(from.length) : url;
}

function swapAll(text: string, from: string, to: string): string {
  return text.split(from).join(to);
}

/** `rtsp://host:port` without credentials, with the default port made explicit. */
export function baseOf(url: URL): string {
  return `${url.protocol}//${url.hostname.includes(':') ? `[${url.hostname}]` : url.hostname}:${url.port || '554'}`;
}

export async function startReplayProxy(opts: { target: string; replay: ReplayRequest | null; connectTimeoutMs: number }): Promise<ReplayProxy> {
  const target = new URL(opts.target);
  const cred: Credentials | null = target.username ? { user: decodeURIComponent(target.username), password: decodeURIComponent(target.password) } : null;
  const cameraBase = baseOf(target);
  const report: ReplayReport = { playRange: null, firstPacketMs: null, refused: null, upstreamError: null };
  const sockets = new Set<Socket>();
  const server: Server = createServer({ noDelay: true });
  server.maxConnections = 1;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const proxyBase = `rtsp://127.0.0.1:${port}`;
  const ctx: RewriteContext = { proxyBase, cameraBase, replay: opts.replay };

  server.on('connection', (client) => {
    sockets.add(client);
    const upstream = connect({ host: target.hostname, port: Number(target.port || 554), noDelay: true });
    sockets.add(upstream);
    const fail = (why: string): void => {
      report.upstreamError ??= why;
      client.destroy();
      upstream.destroy();
    };
    const timer = setTimeout(() => fail(`camera ${cameraBase} did not accept a connection within ${opts.connectTimeoutMs} ms`), opts.connectTimeoutMs);
    upstream.once('connect', () => clearTimeout(timer));
    upstream.on('error', (err) => fail(`camera ${cameraBase}: ${err.message}`));
    client.on('error', () => upstream.destroy());
    upstream.on('close', () => {
      clearTimeout(timer);
      client.end();
    });
    client.on('close', () => upstream.destroy());

    const fromClient = new RtspStreamParser();
    const fromCamera = new RtspStreamParser();
    let cseq = 0;
    let challenge: Challenge | null = null;
    let nonceUses = 0;
    let sawRtp = false;
    /** Our CSeq → ffmpeg's CSeq and the request as sent (for a 401 retry). */
    const inflight = new Map<number, { clientCSeq: string | undefined; request: RtspMessage; retried: boolean }>();

    const send = (request: RtspMessage, clientCSeq: string | undefined, retried: boolean): void => {
      const m: RtspMessage = { ...request, headers: [...request.headers] };
      cseq++;
      setHeader(m, 'CSeq', String(cseq));
      if (challenge && cred) {
        const { method, url } = requestLine(m);
        setHeader(m, 'Authorization', authorization(challenge, cred, method, url, ++nonceUses));
      }
      inflight.set(cseq, { clientCSeq, request, retried });
      upstream.write(serialize(m));
    };

    client.on('data', (bytes: Buffer) => {
      let items;
      try {
        items = fromClient.push(bytes);
      } catch (err) {
        return fail(`ffmpeg: ${(err as Error).message}`);
      }
      for (const item of items) {
        if (item.kind === 'frame')
          upstream.write(item.raw); // RTCP receiver reports
        else if (isResponse(item.message))
          upstream.write(serialize(item.message)); // answer to a camera request
        else send(rewriteRequest(item.message, ctx), header(item.message, 'CSeq'), false);
      }
    });

    upstream.on('data', (bytes: Buffer) => {
      let items;
      try {
        items = fromCamera.push(bytes);
      } catch (err) {
        return fail(`camera ${cameraBase}: ${(err as Error).message}`);
      }
      for (const item of items) {
        if (item.kind === 'frame') {
          // Only the first RTP packet (even channel) says where the replay starts.
          if (!sawRtp && item.channel % 2 === 0) {
            sawRtp = true;
            report.firstPacketMs = onvifPacketTimeMs(item.payload);
          }
          client.write(item.raw);
          continue;
        }
        const m = item.message;
        if (!isResponse(m)) {
          client.write(serialize(m)); // a request of the camera (e.g. ANNOUNCE): ffmpeg answers
          continue;
        }
        const ours = Number(header(m, 'CSeq'));
        const sent = inflight.get(ours);
        inflight.delete(ours);
        const status = statusCode(m);
        if (status === 401 && sent && !sent.retried && cred) {
          const ch = pickChallenge(m.headers.filter(([n]) => n.toLowerCase() === 'www-authenticate').map(([, v]) => v));
          if (ch) {
            challenge = ch;
            nonceUses = 0;
            send(sent.request, sent.clientCSeq, true);
            continue;
          }
        }
        const method = sent ? requestLine(sent.request).method : '';
        if ((status < 200 || status >= 300) && REPLAY_METHODS.has(method)) {
          report.refused ??= { method, status, reason: m.startLine.split(' ').slice(2).join(' ') };
        }
        if (method === 'PLAY' && status >= 200 && status < 300) {
          const range = header(m, 'Range');
          report.playRange = range ? parseClockRange(range) : null;
        }
        const back = rewriteResponse(m, ctx);
        setHeader(back, 'CSeq', sent?.clientCSeq);
        client.write(serialize(back));
      }
    });
  });

  const path = `${target.pathname}${target.search}`;
  return {
    url: `${proxyBase}${path}`,
    report,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
