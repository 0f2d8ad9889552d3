/**
 * One bound on the media streams served at once (downloads, /play, video.ps, segment
 * byte ranges for HLS, smart raw data, live view and playback sessions over
 * WebSocket). Each stream holds a read buffer and stream state (~0.5 MB per stalled
 * download, bench/README.md playback), so thousands of clients would otherwise grow
 * memory without bound. Past the bound a request gets 503 TOO_MANY_STREAMS with
 * `Retry-After` before any file is opened; metadata routes (search, cameras, health,
 * metrics) are never limited, so an operator can always look.
 *
 * Invariant: every slot taken is given back exactly once, when the response (or the
 * WebSocket's connection) closes, finished or aborted.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';

/** Route patterns that stream media; everything else is metadata and never limited. */
export const STREAM_ROUTES: ReadonlySet<string> = new Set([
  '/api/cameras/:id/video.mp4',
  '/api/cameras/:id/video.ps',
  '/api/cameras/:id/play',
  '/api/cameras/:id/segments/:file',
  '/api/cameras/:id/smart.raw',
  '/api/cameras/:id/smart.bin',
  '/api/cameras/:id/live',
  '/api/cameras/:id/playback',
]);

/** Seconds a refused client is told to wait. */
const RETRY_AFTER_SECONDS = 2;

export class StreamLimiter {
  private inFlight = 0;
  /** Refusals since start (for /metrics). */
  refused = 0;

  constructor(readonly max: number) {}

  get active(): number {
    return this.inFlight;
  }

  /** A release function, or null when all `max` slots are taken. */
  tryAcquire(): (() => void) | null {
    if (this.inFlight >= this.max) {
      this.refused++;
      return null;
    }
    this.inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight--;
    };
  }
}

/**
 * Registers the limit on `app` (before its routes). Refusals are logged once per
 * burst (at most one line a minute), not once per request: a flood must not also
 * flood the log.
 */
export function installStreamLimit(app: FastifyInstance, limiter: StreamLimiter, log: Logger): void {
  let lastLogAt = 0;
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (!STREAM_ROUTES.has(req.routeOptions.url ?? '')) return;
    const release = limiter.tryAcquire();
    if (!release) {
      const now = Date.now();
      if (now - lastLogAt > 60_000) {
        lastLogAt = now;
        log.warn({ max: limiter.max, refused: limiter.refused }, 'media streams at their limit: refusing new ones (503 TOO_MANY_STREAMS)');
      }
      void reply.header('Retry-After', String(RETRY_AFTER_SECONDS));
      throw new RecorderError('TOO_MANY_STREAMS', `all ${limiter.max} media stream slots are in use; try again in ${RETRY_AFTER_SECONDS} s`, {
        details: { max: limiter.max, retryAfterSeconds: RETRY_AFTER_SECONDS },
      });
    }
    // A WebSocket lives on its connection; an HTTP response ends before a kept-alive
    // connection does. 'close' fires on both for a finished and for an aborted stream.
    if (req.headers.upgrade?.toLowerCase() === 'websocket') req.raw.socket.once('close', release);
    else reply.raw.once('close', release);
  });
}
