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
 * track (any interface, no NAT traversal); `auto` asks for what the camera took last
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
 * (its `choose` throws) and a silent connection fail the session typed; `close()` sends
 * TEARDOWN and ends the connection.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import { bindRtpPair, openRtsp, requestUrl, transportHeader, type MakeRtspError, type RtspResponse } from './rtsp-connection.ts';
import { RtpReorder, REORDER_MS } from './rtp-reorder.ts';
import { chooseTransport, noteRefused, type RtspTransport, type TransportSetting } from './rtsp-transport.ts';
import { readRtp, type RtpPacket } from '../media/rtp/rtp-packet.ts';
import { RECEIVER_REPORT_MS, ReceptionStats, receiverReport } from '../media/rtp/receiver-report.ts';
import { randomInt } from 'node:crypto';

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
}

export interface RtpSession<T> {
  /** The tracks set up, as `choose` returned them (the sink's `track` indexes them). */
  readonly tracks: readonly T[];
  /** RTP packets missing by sequence number so far, every track. */
  readonly lostPackets: number;
  /** The lower transport the camera took. */
  readonly transport: RtspTransport;
  /** Settles when the camera connection ends (with the reason) or close() is called. */
  readonly ended: Promise<Error | null>;
  /** Stops reading the camera (TCP back-pressure; over UDP packets are dropped) until resume(). */
  pause(): void;
  resume(): void;
  close(): void;
}

interface TrackState {
  /** TCP: the interleaved channels the camera answered. */
  rtpChannel: number;
  rtcpChannel: number;
  expectSeq: number;
  udp: { rtp: UdpSocket; rtcp: UdpSocket } | null;
  /** UDP only: puts the track's packets back in order (kept after close for its count). */
  reorder: RtpReorder<RtpPacket> | null;
  /** What our receiver reports say of the track. */
  stats: ReceptionStats;
  /** UDP: the camera's RTCP port (SETUP's `server_port`); null when it gave none. */
  serverRtcpPort: number | null;
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
  // Errors this session made are passed on as they are; any other (a socket's) is made one.
  const made = new WeakSet<Error>();
  const fail: MakeRtspError = (kind, message, status) => {
    const e = opts.fail(kind, message, status);
    made.add(e);
    return e;
  };
  const url = new URL(cameraUrl);
  const rtspUrl = requestUrl(url);
  const setting = opts.transport ?? 'auto';
  const memoryKey = opts.memoryKey ?? cameraUrl;
  if (setting === 'http') throw fail('TRANSPORT', `transport "http" (RTSP tunnelled in HTTP) is not supported by our RTSP client (${url.host})`, null);
  const states: TrackState[] = [];
  let tcpLost = 0;
  let udpDropped = 0;
  let endedResolve!: (e: Error | null) => void;
  const ended = new Promise<Error | null>((r) => (endedResolve = r));
  let closed = false;
  let paused = false;
  let playing = false;
  let reorderTimer: NodeJS.Timeout | null = null;
  let reportTimer: NodeJS.Timeout | null = null;
  /** Our SSRC in receiver reports. */
  const ourSsrc = randomInt(1, 0xffffffff);

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
  const rtsp = await openRtsp(url, timeoutMs, onFrame, fail);
  const sock = rtsp.sock;
  let keepalive: NodeJS.Timeout | null = null;
  const closeUdp = (): void => {
    for (const s of states) {
      s.udp?.rtp.close();
      s.udp?.rtcp.close();
      s.udp = null;
    }
  };
  function finish(err: Error | null): void {
    if (closed) return;
    closed = true;
    if (keepalive) clearInterval(keepalive);
    if (reorderTimer) clearInterval(reorderTimer);
    if (reportTimer) clearInterval(reportTimer);
    closeUdp();
    if (err === null && playing && !sock.destroyed) {
      // Asked to stop: the camera is told (a UDP session would otherwise stream on until it times out).
      try {
        rtsp.fire('TEARDOWN', rtspUrl);
        sock.end();
        setTimeout(() => sock.destroy(), TEARDOWN_GRACE_MS).unref();
      } catch {
        sock.destroy();
      }
    } else {
      sock.destroy();
    }
    endedResolve(err);
  }
  sock.on('close', () => finish(fail('RTSP', 'camera closed the RTSP connection', null)));
  sock.on('error', (err) => finish(made.has(err) ? err : fail('RTSP', err.message, null)));
  const describe = async (): Promise<RtspResponse> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await rtsp.request('DESCRIBE', rtspUrl, timeoutMs, { Accept: 'application/sdp' });
      } catch (err) {
        const status = (err as { status?: unknown }).status;
        if (attempt >= DESCRIBE_ATTEMPTS || typeof status !== 'number' || status < 500) throw err;
        await new Promise((r) => setTimeout(r, DESCRIBE_RETRY_MS));
        if (closed) throw fail('RTSP', 'camera closed the RTSP connection', null);
      }
    }
  };
  /** SETUP of track `i` over `transport`; a refusal (461) is thrown as TRANSPORT. */
  const setup = async (i: number, control: string, transport: 'tcp' | 'udp'): Promise<void> => {
    const state: TrackState = { rtpChannel: -1, rtcpChannel: -1, expectSeq: -1, udp: null, reorder: null, stats: new ReceptionStats(), serverRtcpPort: null };
    if (transport === 'tcp') {
      const r = await rtsp.request('SETUP', control, timeoutMs, { Transport: transportHeader('tcp', 0, 2 * i) });
      const t = r.headers.get('transport') ?? '';
      if (/RTP\/AVP(?!\/TCP)/i.test(t) && !/interleaved=/i.test(t)) throw fail('TRANSPORT', `SETUP ${control}: the camera answered TCP with ${t}`, 461);
      const m = /interleaved=(\d+)(?:-(\d+))?/.exec(t);
      state.rtpChannel = Number(m?.[1] ?? 2 * i);
      state.rtcpChannel = m?.[2] !== undefined ? Number(m[2]) : state.rtpChannel + 1;
      states[i] = state;
      return;
    }
    const pair = await bindRtpPair(sock.remoteFamily === 'IPv6' ? 'udp6' : 'udp4', fail);
    const camera = sock.remoteAddress;
    const reorder = new RtpReorder<RtpPacket>((p, gap) => sink.onPacket(i, p, gap));
    state.udp = pair;
    state.reorder = reorder;
    states[i] = state;
    pair.rtcp.on('message', (msg, from) => {
      if (closed || from.address !== camera) return;
      state.stats.senderReport(msg, Date.now());
      sink.onRtcp?.(i, msg);
    });
    pair.rtcp.on('error', () => undefined);
    pair.rtp.on('error', (err) => finish(fail('RTSP', `RTP socket: ${err.message}`, null)));
    pair.rtp.on('message', (msg, from) => {
      if (closed || from.address !== camera) return; // only the camera's packets
      if (paused) {
        udpDropped++;
        return;
      }
      const rtp = readRtp(msg);
      if (!rtp) return;
      state.stats.packet(rtp.seq, rtp.ssrc);
      reorder.push(rtp.seq, rtp.payload.length > 0 ? rtp : null, Date.now());
    });
    try {
      const r = await rtsp.request('SETUP', control, timeoutMs, { Transport: transportHeader('udp', pair.port) });
      const ports = /server_port=(\d+)(?:-(\d+))?/i.exec(r.headers.get('transport') ?? '');
      const rtcpPort = ports ? (ports[2] !== undefined ? Number(ports[2]) : Number(ports[1]) + 1) : 0;
      // A port out of range (a camera's garbage) gets no reports: dgram would throw in the timer.
      state.serverRtcpPort = rtcpPort >= 1 && rtcpPort <= 65535 ? rtcpPort : null;
    } catch (err) {
      state.udp = null;
      pair.rtp.close();
      pair.rtcp.close();
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
    const described = await describe();
    tracks = choose(described.body, described.headers.get('content-base') ?? rtspUrl).map((t) => {
      try {
        return { ...t, control: requestUrl(new URL(t.control)) }; // no user info on a request line
      } catch {
        return t; // not a URL we can parse: asked as the camera wrote it
      }
    });
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
    }
    await rtsp.request('PLAY', rtspUrl, timeoutMs, { Range: 'npt=0.000-' });
    playing = true;
  } catch (err) {
    finish(err as Error);
    throw err;
  }
  // Keep-alives well inside the session's timeout; a refused login now ends the session.
  keepalive = setInterval(
    () => {
      rtsp.request('GET_PARAMETER', rtspUrl, timeoutMs).catch((err: unknown) => {
        if ((err as { status?: unknown }).status === 401) finish(err as Error);
      });
    },
    Math.min(KEEPALIVE_MS, (rtsp.timeoutS * 1000) / 2),
  );
  keepalive.unref();
  // Receiver reports, as ffmpeg sends them: a camera may end a session whose receiver is silent.
  reportTimer = setInterval(() => {
    const now = Date.now();
    for (const s of states) {
      const report = receiverReport(ourSsrc, s.stats, 'ipcam-recorder', now);
      if (!report || closed) continue;
      if (s.udp) {
        if (s.serverRtcpPort === null) continue;
        try {
          s.udp.rtcp.send(report, s.serverRtcpPort, sock.remoteAddress);
        } catch {
          s.serverRtcpPort = null; // the socket or address cannot send: no more reports, the stream goes on
        }
      } else if (s.rtcpChannel >= 0 && !sock.destroyed) {
        const head = Buffer.from([0x24, s.rtcpChannel, report.length >> 8, report.length & 0xff]);
        sock.write(Buffer.concat([head, report]));
      }
    }
  }, RECEIVER_REPORT_MS);
  reportTimer.unref();
  return {
    tracks,
    get lostPackets() {
      return tcpLost + udpDropped + states.reduce((n, s) => n + (s.reorder?.lost ?? 0), 0);
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
}
