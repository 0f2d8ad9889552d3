/**
 * Starts the ingest of one camera session whatever its RTSP payload: most cameras go
 * straight to ffmpeg (media/ffmpeg-ingest.ts); a camera whose session carries MPEG-PS
 * over RTP (MP2P/90000, GB28181 style) is recognised by one DESCRIBE and read through
 * media/mp2p-bridge.ts, ffmpeg then reading the program stream (`-f mpeg`) and writing
 * the same fMP4 fragments, so segment writing, indexing and playback do not change.
 * A DESCRIBE that fails is not an error here: ffmpeg then reports the camera's problem.
 * The returned session behaves as startIngest's: `stop()` also ends the bridge, and
 * the bridge ending (camera gone) ends the session with its reason.
 */
import type { Fmp4Chunk } from './fmp4-splitter.ts';
import { startIngest, type IngestExit, type IngestOptions, type IngestSession } from './ffmpeg-ingest.ts';
import { startMp2pBridge, type Mp2pBridge } from './mp2p-bridge.ts';
import { describeWithRetry } from './rtsp-describe.ts';

const DESCRIBE_TIMEOUT_MS = 5000;

export interface CameraIngestOptions extends IngestOptions {
  /** Things worth a log line that are not failures (MP2P in use, RTP packets lost). */
  onNotice?: (level: 'info' | 'warn', message: string, details: Record<string, unknown>) => void;
}

export function startCameraIngest(opts: CameraIngestOptions): IngestSession {
  let inner: IngestSession | null = null;
  let bridge: Mp2pBridge | null = null;
  let stopped = false;
  let resolveExit!: (e: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));
  const ready = (async (): Promise<IngestSession | null> => {
    const timeout = Math.min(opts.stallTimeoutMs, DESCRIBE_TIMEOUT_MS);
    // One DESCRIBE per attempt: MP2P here, the data-track check in startIngest.
    const described = await describeWithRetry(opts.url, timeout).catch(() => null);
    if (stopped) return null;
    const mp2p = described?.some((m) => m.encodings.includes('MP2P')) ?? false;
    if (!mp2p) return startIngest({ ...opts, described });
    try {
      bridge = await startMp2pBridge(opts.url, timeout);
    } catch (err) {
      resolveExit({ requested: stopped, error: err as Error });
      return null;
    }
    if (stopped) {
      bridge.close();
      return null;
    }
    const b = bridge;
    opts.onNotice?.('info', 'camera sends MPEG-PS over RTP (MP2P): recording through the bridge', { via: b.url });
    const session = startIngest({ ...opts, url: b.url, inputFormat: 'mpeg' });
    // The camera hanging up ends ffmpeg's input; its reason is the better message.
    void b.ended.then((err) => {
      if (err && !stopped) session.stop();
    });
    void session.exited.then(async (exit) => {
      b.close();
      const why = await b.ended;
      // Lost packets were skipped (ffmpeg resynchronises at the next pack header): counted and logged once.
      if (b.lostPackets > 0) opts.onNotice?.('warn', 'MP2P: RTP packets lost in this session', { lostPackets: b.lostPackets });
      resolveExit(exit.requested || !why ? exit : { requested: false, error: why });
    });
    return session;
  })();
  void ready.then((s) => {
    inner = s;
    if (!s) {
      if (stopped) resolveExit({ requested: true });
      return;
    }
    if (!bridge) void s.exited.then(resolveExit);
    if (stopped) s.stop();
  });

  async function* chunks(): AsyncGenerator<Fmp4Chunk> {
    const s = await ready;
    if (s) yield* s.chunks;
  }

  return {
    chunks: chunks(),
    exited,
    stop() {
      stopped = true;
      inner?.stop();
      bridge?.close();
    },
  };
}
