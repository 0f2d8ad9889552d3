/**
 * A streaming RTSP session of our own client (RFC 2326): DESCRIBE, SETUP of the tracks
 * the owner picks from the SDP, PLAY, GET_PARAMETER keep-alives and TEARDOWN; every
 * RTP packet of those tracks goes to the owner's sink, in sequence order, with a flag
 * when packets are missing before it. The native ingest (ingest/native-ingest.ts,
 * H.264/H.265 and AAC) and the MP2P bridge (rtsp/mp2p-bridge.ts, MPEG-PS) are its two
 * owners; each makes its own typed errors (`fail`).
 *
 * RTCP: sender reports go to the owner (`onRtcp`); our receiver reports (RR + SDES,
 * media/rtp/receiver-report.ts) go back every RECEIVER_REPORT_MS on the track's RTCP
 * channel or port, as ffmpeg's do.
 *
 * Transport (the camera's `transport` setting, rtsp/rtsp-transport.ts): `tcp` is RTP
 * interleaved in the RTSP connection (track i on channels 2i and 2i+1, or what the
 * camera answers); `udp` is RTP to a local even port and RTCP to the next, one pair per
 * track (any interface; RTP taken from the camera's address or the `source=` its SETUP
 * answer names; after SETUP one small packet to each of its ports, as ffmpeg sends, so a
 * NAT or firewall in front of us lets its packets in); `auto` asks for what the camera took last
 * time (TCP first) and, when SETUP is refused 461 Unsupported transport, asks at once
 * for the other on the same connection (and remembers it for the next attempts).
 * `http` tunnelling is not done here: TRANSPORT (the caller decides what runs instead).
 *
 * Packets and memory: over TCP a packet is a view of the connection's reused read
 * buffer (rtsp/rtsp-connection.ts), **valid only during `onPacket`**: a sink that keeps
 * bytes copies them. Over UDP each datagram is its own Buffer and packets are put back
 * in sequence order (rtsp/rtp-reorder.ts) before the sink sees them. RTCP (sender
 * reports, for the owner's clock mapping) goes to `onRtcp` the same way.
 *
 * Bounds and failures: `pause()` stops reading the camera's TCP socket (back-pressure)
 * until `resume()`; over UDP the camera cannot be slowed, so packets that arrive while
 * paused are dropped and counted lost. A gap in RTP sequence numbers is counted
 * (`lostPackets`). A DESCRIBE answered 5xx is asked again (DESCRIBE_ATTEMPTS). RTSP
 * errors, a refused login, a refused transport, an SDP without a track the owner wants
 * (its `choose` throws) and a silent connection fail the session typed; the camera
 * closing the connection fails the request waiting at once (CONNECT). `close()` sends
 * TEARDOWN and ends the connection. The owner's `signal` aborted while starting closes
 * every socket and timer at once and rejects with an RtspAbortError (rtsp-connection.ts);
 * aborted later, it is `close()`.
 *
 * URLs (RFC 2326 C.1.1): tracks are SET UP at their own control URL; PLAY, GET_PARAMETER
 * and TEARDOWN go to the aggregate one: the SDP's session-level `a=control`, else the
 * base (Content-Base, else Content-Location, else the request URL).
 */
import type { Socket as UdpSocket } from 'node:dgram';
import { isIP } from 'node:net';
import {
  abortError,
  bindRtpPair,
  closeDgram,
  openRtsp,
  requestUrl,
  transportHeader,
  type MakeRtspError,
  type RtspConnection,
  type RtspResponse,
} from './rtsp-connection.ts';
import { RtpReorder, REORDER_MS } from './rtp-reorder.ts';
import { chooseTransport, noteRefused, type RtspTransport, type TransportSetting } from './rtsp-transport.ts';
import { readRtp, type RtpPacket } from '../media/rtp/rtp-packet.ts';
import { RECEIVER_REPORT_MS, ReceptionStats, receiverReport } from '../media/rtp/receiver-report.ts';
import { randomInt } from 'node:crypto';
import { sleepUnlessStopped } from '../lib/lifecycle.ts';

const KEEPALIVE_MS = 20_000;
/**
 * A DESCRIBE answered 5xx is asked again on the same connection, this many times in all,
 * this far apart (as rtsp/rtsp-describe.ts's describeWithRetry does): GStreamer's server
 * answers 503 to a DESCRIBE that arrives while it unprepares the shared media of a client
 * that just left, and the ingest's own DESCRIBE (ingest/camera-ingest.ts) is such a client,
 * closed a moment before this session connects. Without this, most attempts on a loaded
 * machine failed so (14 of 20 measured), each doubling the camera's backoff up to its 30 s
 * cap: a camera that came back was recorded again only minutes later.
 */
const DESCRIBE_ATTEMPTS = 3;
const DESCRIBE_RETRY_MS = 700;
/** TEARDOWN's moment to leave before the connection is cut. */
const TEARDOWN_GRACE_MS = 500;

export interface RtpSink {
  /** One RTP packet of the chosen track `track`, in sequence order; `gap`: packets are missing right before it. */
  onPacket(track: number, packet: RtpPacket, gap: boolean): void;
  /** An RTCP compound packet of track `track` (sender reports). */
  onRtcp?(track: number, bytes: Buffer): void;
}

export interface RtpSessionOptions {
  /** The camera's transport setting (default `auto`); `http` is refused (TRANSPORT). */
  transport?: TransportSetting;
  /** Names the camera across attempts for what `auto` learns (default the URL). */
  memoryKey?: string;
  /** Makes the owner's typed errors. */
  fail: MakeRtspError;
  /** Aborted while starting: every socket and timer closed at once, RtspAbortError; aborted later: close(). */
  signal?: AbortSignal;
}

export interface RtpSession<T> {
  /** The tracks set up, as `choose` returned them (the sink's `track` indexes them). */
  readonly tracks: readonly T[];
  /** RTP packets missing by sequence number so far, every track. */
  readonly lostPackets: number;
  /** Stray bytes between interleaved frames skipped to resynchronise (TCP). */
  readonly skippedBytes: number;
  /** The lower transport the camera took. */
  readonly transport: RtspTransport;
  /** Settles when the camera connection ends (with the reason) or close() is called. */
  readonly ended: Promise<Error | null>;
  /** Stops reading the camera (TCP back-pressure; over UDP packets are dropped) until resume(). */
  pause(): void;
  resume(): void;
  close(): void;
}

interface UdpPair {
  rtp: UdpSocket;
  rtcp: UdpSocket;
  port: number;
}

interface TrackState {
  /** TCP: the interleaved channels the camera answered. */
  rtpChannel: number;
  rtcpChannel: number;
  expectSeq: number;
  udp: UdpPair | null;
  /** UDP only: puts the track's packets back in order (kept after close for its count). */
  reorder: RtpReorder<RtpPacket> | null;
  /** UDP: the source the reorder follows; a new one (an encoder restart) starts its numbering afresh. */
  ssrc: number | null;
  /** What our receiver reports say of the track. */
  stats: ReceptionStats;
  /** UDP: where the camera's RTCP goes (SETUP's `server_port`, at `source=` or the camera); null when it gave none. */
  serverRtcp: { address: string; port: number } | null;
}

/** The base of the SDP's relative URLs (RFC 2326 C.1.1): Content-Base, else Content-Location, else the request URL. */
export function sdpBase(headers: Map<string, string>, requestUrl: string): string {
  for (const name of ['content-base', 'content-location']) {
    const v = headers.get(name)?.trim();
    if (!v) continue;
    if (/^rtsps?:\/\//i.test(v)) return v; // as the camera wrote it: it is asked so
    try {
      return new URL(v, requestUrl).href;
    } catch {
      /* not a URL: the next candidate */
    }
  }
  return requestUrl;
}

/**
 * The aggregate control URL (RFC 2326 C.1.1) that PLAY, GET_PARAMETER and TEARDOWN go
 * to: the session-level `a=control` of `sdp` (before the first `m=`), an absolute URL as
 * it is, a relative one joined to `base` as rtsp/sdp-tracks.ts joins the tracks' (most
 * cameras' Content-Base has no trailing slash), `*` or none: `base` itself.
 */
export function aggregateControl(sdp: string, base: string): string {
  const session = sdp.split(/\r?\n(?=m=)/)[0] ?? '';
  const control = session.startsWith('m=') ? '' : (/^a=control:(\S+)/im.exec(session)?.[1] ?? '');
  if (/^rtsps?:\/\//i.test(control)) return control;
  if (control === '' || control === '*') return base;
  return `${base.replace(/\/$/, '')}/${control}`;
}

/** A URL for a request line: without user info (the login is in `Authorization`); as written when it does not parse. */
function lineUrl(url: string): string {
  try {
    return requestUrl(new URL(url));
  } catch {
    return url;
  }
}

/** What a UDP SETUP answer's `Transport` says: the camera's ports (in range, else null) and its `source=` address (an IP, else null). */
export function udpAnswer(transport: string): { rtpPort: number | null; rtcpPort: number | null; source: string | null } {
  const ports = /server_port=(\d+)(?:-(\d+))?/i.exec(transport);
  const port = (n: number): number | null => (Number.isInteger(n) && n >= 1 && n <= 65535 ? n : null);
  const rtpPort = ports ? port(Number(ports[1])) : null;
  const rtcpPort = ports ? port(ports[2] !== undefined ? Number(ports[2]) : Number(ports[1]) + 1) : null;
  const source = /(?:^|;)\s*source=([^;\s]+)/i.exec(transport)?.[1] ?? null;
  return { rtpPort, rtcpPort, source: source !== null && isIP(source) ? source : null };
}

/**
 * ffmpeg's "punch" packets after a UDP SETUP: an RTP header without payload to the
 * camera's RTP port and an empty receiver report to its RTCP port, each from the local
 * port the camera sends to, so a NAT or stateful firewall in front of us has seen
 * traffic out and lets the camera's in. Lost or refused sends do not matter.
 */
function punch(pair: UdpPair, address: string, rtpPort: number | null, rtcpPort: number | null, ssrc: number): void {
  const ignore = (): void => undefined;
  if (rtpPort !== null) {
    const rtp = Buffer.alloc(12);
    rtp[0] = 0x80; // V=2; payload type 0, sequence 0, timestamp 0
    rtp.writeUInt32BE(ssrc >>> 0, 8);
    pair.rtp.send(rtp, rtpPort, address, ignore);
  }
  if (rtcpPort !== null) {
    const rr = Buffer.alloc(8);
    rr[0] = 0x80; // V=2, no report block
    rr[1] = 201;
    rr.writeUInt16BE(1, 2);
    rr.writeUInt32BE(ssrc >>> 0, 4);
    pair.rtcp.send(rr, rtcpPort, address, ignore);
  }
}

/**
 * Connects to the camera and starts the stream; resolves once PLAY succeeded.
 * `choose` picks the tracks to set up from the SDP (and throws the owner's error when
 * there is none it can use); each must have an absolute `control` URL.
 */
export async function startRtpSession<T extends { control: string }>(
  cameraUrl: string,
  timeoutMs: number,
  choose: (sdp: string, base: string) => T[],
  sink: RtpSink,
  opts: RtpSessionOptions,
): Promise<RtpSession<T>> {
  const fail = opts.fail;
  const url = new URL(cameraUrl);
  const rtspUrl = requestUrl(url);
  const setting = opts.transport ?? 'auto';
  const memoryKey = opts.memoryKey ?? cameraUrl;
  if (setting === 'http') throw fail('TRANSPORT', `transport "http" (RTSP tunnelled in HTTP) is not supported by our RTSP client (${url.host})`, null);
  const signal = opts.signal;
  if (signal?.aborted) throw abortError(url.host, signal);
  const states: TrackState[] = [];
  let tcpLost = 0;
  let udpDropped = 0;
  let endedResolve!: (e: Error | null) => void;
  const ended = new Promise<Error | null>((r) => (endedResolve = r));
  let closed = false;
  /** Why the session ended (null: asked to); meaningful once `closed`. */
  let failure: Error | null = null;
  /** Aborted when the session ends: waits in the start wake up. */
  const life = new AbortController();
  let paused = false;
  let playing = false;
  let reorderTimer: NodeJS.Timeout | null = null;
  let reportTimer: NodeJS.Timeout | null = null;
  let keepalive: NodeJS.Timeout | null = null;
  /** Our SSRC in receiver reports. */
  const ourSsrc = randomInt(1, 0xffffffff);
  /** PLAY, GET_PARAMETER and TEARDOWN go here (the SDP's aggregate control, once described). */
  let aggregate = rtspUrl;

  const onFrame = (ch: number, p: Buffer): void => {
    if (closed) return;
    for (let i = 0; i < states.length; i++) {
      const s = states[i]!;
      if (ch === s.rtcpChannel) {
        s.stats.senderReport(p, Date.now());
        return sink.onRtcp?.(i, p);
      }
      if (ch !== s.rtpChannel) continue;
      const rtp = readRtp(p);
      if (!rtp) return;
      s.stats.packet(rtp.seq, rtp.ssrc);
      let gap = false;
      if (s.expectSeq >= 0 && rtp.seq !== s.expectSeq) {
        const ahead = (rtp.seq - s.expectSeq + 0x10000) & 0xffff;
        if (ahead < 0x8000) tcpLost += ahead; // else a late or repeated packet: no count, but a hole all the same
        gap = true;
      }
      s.expectSeq = (rtp.seq + 1) & 0xffff;
      if (rtp.payload.length > 0) sink.onPacket(i, rtp, gap);
      return;
    }
  };
  // Set once connected; an abort before that is openRtsp's.
  let rtsp: RtspConnection | null = null;
  const onAbort = (): void => finish(playing ? null : abortError(url.host, signal!));
  const closeUdp = (): void => {
    for (const s of states) {
      if (s.udp) closePair(s.udp);
      s.udp = null;
    }
  };
  function finish(err: Error | null): void {
    if (closed) return;
    closed = true;
    failure = err;
    signal?.removeEventListener('abort', onAbort);
    life.abort();
    if (keepalive) clearInterval(keepalive);
    if (reorderTimer) clearInterval(reorderTimer);
    if (reportTimer) clearInterval(reportTimer);
    closeUdp();
    if (rtsp) endConnection(rtsp, err);
    endedResolve(err);
  }
  /** Asked to stop while playing: the camera is told (a UDP session would otherwise stream on until it times out). */
  function endConnection(conn: RtspConnection, err: Error | null): void {
    const sock = conn.sock;
    if (err === null && playing && !sock.destroyed) {
      try {
        conn.fire('TEARDOWN', aggregate);
        sock.end();
        const grace = setTimeout(() => sock.destroy(), TEARDOWN_GRACE_MS).unref();
        sock.once('close', () => clearTimeout(grace));
        return;
      } catch {
        /* cut below */
      }
    }
    conn.end(err ?? fail('CONNECT', `${url.host}: session closed`, null));
  }
  /** The start goes on only while the session is open; else it fails with why the session ended. */
  const alive = (): void => {
    if (closed) throw failure ?? fail('CONNECT', `${url.host}: session closed`, null);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    rtsp = await openRtsp(url, timeoutMs, onFrame, fail, signal ? { signal } : {});
  } catch (err) {
    signal?.removeEventListener('abort', onAbort);
    throw err;
  }
  const conn = rtsp;
  const sock = conn.sock;
  if (closed) conn.end(failure ?? fail('CONNECT', `${url.host}: session closed`, null)); // aborted as it connected
  conn.onEnd((err) => finish(err));

  const describe = async (): Promise<RtspResponse> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await conn.request('DESCRIBE', rtspUrl, timeoutMs, { Accept: 'application/sdp' });
      } catch (err) {
        const status = (err as { status?: unknown }).status;
        if (attempt >= DESCRIBE_ATTEMPTS || typeof status !== 'number' || status < 500 || closed) throw err;
        await sleepUnlessStopped(DESCRIBE_RETRY_MS, life.signal);
        alive();
      }
    }
  };
  /** SETUP of track `i` over `transport`; a refusal (461) is thrown as TRANSPORT. */
  const setup = async (i: number, control: string, transport: 'tcp' | 'udp'): Promise<void> => {
    const state: TrackState = {
      rtpChannel: -1,
      rtcpChannel: -1,
      expectSeq: -1,
      udp: null,
      reorder: null,
      ssrc: null,
      stats: new ReceptionStats(),
      serverRtcp: null,
    };
    if (transport === 'tcp') {
      const r = await conn.request('SETUP', control, timeoutMs, { Transport: transportHeader('tcp', 0, 2 * i) });
      const t = r.headers.get('transport') ?? '';
      if (/RTP\/AVP(?!\/TCP)/i.test(t) && !/interleaved=/i.test(t)) throw fail('TRANSPORT', `SETUP ${control}: the camera answered TCP with ${t}`, 461);
      const m = /interleaved=(\d+)(?:-(\d+))?/.exec(t);
      state.rtpChannel = Number(m?.[1] ?? 2 * i);
      state.rtcpChannel = m?.[2] !== undefined ? Number(m[2]) : state.rtpChannel + 1;
      states[i] = state;
      return;
    }
    const pair = await bindRtpPair(sock.remoteFamily === 'IPv6' ? 'udp6' : 'udp4', fail);
    if (closed) closePair(pair); // ended while binding: no socket may outlive the session
    alive();
    const camera = sock.remoteAddress;
    /** Where the track's RTP and RTCP may come from: the camera, and the `source=` it names. */
    const senders = new Set(camera !== undefined ? [camera] : []);
    const reorder = new RtpReorder<RtpPacket>((p, gap) => sink.onPacket(i, p, gap));
    state.udp = pair;
    state.reorder = reorder;
    states[i] = state;
    pair.rtcp.on('message', (msg, from) => {
      if (closed || !senders.has(from.address)) return;
      state.stats.senderReport(msg, Date.now());
      sink.onRtcp?.(i, msg);
    });
    pair.rtcp.on('error', () => undefined);
    pair.rtp.on('error', (err) => finish(fail('RTSP', `RTP socket: ${err.message}`, null)));
    pair.rtp.on('message', (msg, from) => {
      if (closed || !senders.has(from.address)) return; // only the camera's packets
      if (paused) {
        udpDropped++;
        return;
      }
      const rtp = readRtp(msg);
      if (!rtp) return;
      state.stats.packet(rtp.seq, rtp.ssrc);
      // A new SSRC numbers its packets from anywhere: waiting for the old numbering
      // would hold or drop its first packets (up to the reorder window).
      if (state.ssrc !== null && rtp.ssrc !== state.ssrc) reorder.restart(true);
      state.ssrc = rtp.ssrc;
      reorder.push(rtp.seq, rtp.payload.length > 0 ? rtp : null, Date.now());
    });
    try {
      const r = await conn.request('SETUP', control, timeoutMs, { Transport: transportHeader('udp', pair.port) });
      alive();
      const answer = udpAnswer(r.headers.get('transport') ?? '');
      if (answer.source !== null) senders.add(answer.source);
      const peer = answer.source ?? camera;
      // A port out of range (a camera's garbage) gets no reports: dgram would throw in the timer.
      state.serverRtcp = peer !== undefined && answer.rtcpPort !== null ? { address: peer, port: answer.rtcpPort } : null;
      if (peer !== undefined) punch(pair, peer, answer.rtpPort, answer.rtcpPort, ourSsrc);
    } catch (err) {
      state.udp = null;
      closePair(pair);
      throw err;
    }
    if (!reorderTimer) {
      reorderTimer = setInterval(() => {
        const now = Date.now();
        for (const s of states) s.reorder?.drain(now);
      }, REORDER_MS / 2);
      reorderTimer.unref();
    }
  };
  let used: RtspTransport = chooseTransport(memoryKey, setting);
  let tracks: T[] = [];
  try {
    alive();
    const described = await describe();
    alive();
    const base = sdpBase(described.headers, rtspUrl);
    aggregate = lineUrl(aggregateControl(described.body, base));
    tracks = choose(described.body, base).map((t) => ({ ...t, control: lineUrl(t.control) })); // no user info on a request line
    for (let i = 0; i < tracks.length; i++) {
      try {
        await setup(i, tracks[i]!.control, used as 'tcp' | 'udp');
      } catch (err) {
        // auto: a camera that refuses one lower transport (at its first track) is asked for the other at once.
        const refused = (err as { status?: unknown }).status === 461;
        if (setting !== 'auto' || i > 0 || !refused || closed) throw err;
        noteRefused(memoryKey, used);
        used = used === 'tcp' ? 'udp' : 'tcp';
        await setup(i, tracks[i]!.control, used);
      }
      alive();
    }
    await conn.request('PLAY', aggregate, timeoutMs, { Range: 'npt=0.000-' });
    // A failure read with PLAY's answer (the same read) has ended the session already: no timers then.
    alive();
    playing = true;
  } catch (err) {
    finish(err as Error);
    throw failure ?? err;
  }
  startTimers();
  return {
    tracks,
    get lostPackets() {
      return tcpLost + udpDropped + states.reduce((n, s) => n + (s.reorder?.lost ?? 0), 0);
    },
    get skippedBytes() {
      return conn.skippedBytes;
    },
    transport: used,
    ended,
    pause: () => {
      paused = true;
      if (used === 'tcp') sock.pause();
    },
    resume: () => {
      paused = false;
      if (used === 'udp') for (const s of states) s.reorder?.restart(true);
      else sock.resume();
    },
    close: () => finish(null),
  };

  /** Keep-alives and receiver reports, once playing (finish() clears them). */
  function startTimers(): void {
    // Keep-alives well inside the session's timeout; a refused login now ends the session.
    keepalive = setInterval(
      () => {
        conn.request('GET_PARAMETER', aggregate, timeoutMs).catch((err: unknown) => {
          if ((err as { status?: unknown }).status === 401) finish(err as Error);
        });
      },
      Math.min(KEEPALIVE_MS, (conn.timeoutS * 1000) / 2),
    );
    keepalive.unref();
    // Receiver reports, as ffmpeg sends them: a camera may end a session whose receiver is silent.
    reportTimer = setInterval(() => sendReports(), RECEIVER_REPORT_MS);
    reportTimer.unref();
  }

  function sendReports(): void {
    const now = Date.now();
    for (const s of states) {
      const report = receiverReport(ourSsrc, s.stats, 'ipcam-recorder', now);
      if (!report || closed) continue;
      if (s.udp) {
        if (s.serverRtcp === null) continue;
        try {
          s.udp.rtcp.send(report, s.serverRtcp.port, s.serverRtcp.address);
        } catch {
          s.serverRtcp = null; // the socket or address cannot send: no more reports, the stream goes on
        }
      } else if (s.rtcpChannel >= 0 && !sock.destroyed) {
        const head = Buffer.from([0x24, s.rtcpChannel, report.length >> 8, report.length & 0xff]);
        sock.write(Buffer.concat([head, report]));
      }
    }
  }
}

/** Closes a track's two UDP sockets; safe to call again (the SETUP error path and finish() may both). */
function closePair(pair: UdpPair): void {
  closeDgram(pair.rtp);
  closeDgram(pair.rtcp);
}
