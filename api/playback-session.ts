/**
 * WS /api/cameras/:id/playback — a playback session: JSON commands in, fragmented MP4
 * out, over one socket. The protocol (also in docs/api/http-media.md):
 *
 * Client → server (text, one JSON object each):
 *   {"cmd":"play","from":T,"to"?:T,"speed"?:S,"reverse"?:bool,"iframes"?:bool}
 *        start a stream at `from` (the GOP holding it); without `from`, resume after pause
 *   {"cmd":"pause"}                   stop sending (the position is kept)
 *   {"cmd":"seek","at":T}             restart at `at`, same speed/direction, paused stays paused
 *   {"cmd":"speed","speed":S,"reverse"?:bool,"iframes"?:bool}
 *                                     restart at the current position with a new trick mode
 *   {"cmd":"stop"}                    end the session (close 1000)
 * Server → client:
 *   text {"type":"init","mimeType","mode","speed","reverse","from","mediaStart"} then one
 *        binary message with the init (ftyp+moov): a new stream starts. `mediaStart` is
 *        the decode time (s) of its first sample, `from` the wall-clock start of that
 *        sample's GOP (the I-frame at or before the instant asked for): streams of one session continue the
 *        previous one's timeline, so a client keeps its SourceBuffer when `mimeType` is
 *        unchanged (audio is only present at speed 1). `audioLeftOut` (only when there
 *        is some) names audio browsers cannot play (G.711 of PS recordings): left out,
 *        the stream is video only.
 *   binary: one fragment (moof+mdat, one GOP or one I-frame) per message
 *   text {"type":"state","state":"playing"|"paused","position":iso|null} after each command
 *   text {"type":"end","reason":"end"|"codec-change","position":iso|null} when a stream runs out
 *   text {"type":"error","error":{code,message}} for a bad command (the session goes on)
 *
 * Flow control: fragments are sent at most LEAD_SEC of media ahead of real time (a
 * player's buffer stays small, pause takes effect at once), and never while the
 * socket holds more than MAX_BUFFERED_BYTES unsent: a slow client stalls its own
 * stream; server memory per session stays at one GOP plus that bound.
 */
import type { FastifyInstance } from 'fastify';
import type { RawData, WebSocket } from 'ws';
import type {} from '@fastify/websocket';
import { errorBody, RecorderError, toRecorderError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { iso, parseTimeMs } from '../lib/time.ts';
import type { PlaybackStream } from '../playback/playback-stream.ts';
import type { HttpDeps } from './http-deps.ts';
import type { RecorderService } from '../services/recorder-service.ts';
import type { PlaybackWindow } from '../services/playback-windows.ts';
import { openPlayback } from './play.ts';
import { parsePlaybackQuery, type PlaybackQuery } from '../playback/playback-source.ts';

export const MAX_BUFFERED_BYTES = 256 * 1024;
export const LEAD_SEC = 8;
const POLL_MS = 25;

interface Options {
  speed?: unknown;
  reverse?: unknown;
  iframes?: unknown;
}

type Command =
  ({ cmd: 'play'; from?: unknown; to?: unknown } & Options) | { cmd: 'pause' } | { cmd: 'seek'; at: unknown } | ({ cmd: 'speed' } & Options) | { cmd: 'stop' };

const FIELDS: Record<Command['cmd'], string[]> = {
  play: ['from', 'to', 'speed', 'reverse', 'iframes'],
  pause: [],
  seek: ['at'],
  speed: ['speed', 'reverse', 'iframes'],
  stop: [],
};

export function parseCommand(text: string): Command {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new RecorderError('BAD_JSON', 'a command is one JSON object, e.g. {"cmd":"pause"}');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ValidationError('a command is a JSON object with a "cmd"');
  const o = v as Record<string, unknown>;
  const cmd = o.cmd;
  if (typeof cmd !== 'string' || !(cmd in FIELDS)) throw new ValidationError(`cmd: one of ${Object.keys(FIELDS).join(', ')}; got ${JSON.stringify(cmd)}`);
  const allowed = FIELDS[cmd as Command['cmd']];
  for (const k of Object.keys(o)) if (k !== 'cmd' && !allowed.includes(k)) throw new ValidationError(`${cmd}: unknown field ${JSON.stringify(k)}`);
  if (cmd === 'seek' && o.at === undefined) throw new ValidationError('seek: "at" is required');
  return o as Command;
}

/** Query strings carry flags as text; commands carry JSON booleans. Both mean the same. */
/** A text frame's payload as a string (ws hands it over as one buffer, fragments or an ArrayBuffer). */
function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}

function flagText(v: unknown): unknown {
  return typeof v === 'boolean' ? (v ? '1' : '0') : v;
}

/** What a session reads: the index and files, and the service that decides its windows. */
export type PlaybackSessionDeps = Pick<HttpDeps, 'index' | 'dataDir' | 'caches'> & { service: Pick<RecorderService, 'playbackWindow'> };

export class PlaybackSession {
  private stream: PlaybackStream | null = null;
  private query: PlaybackQuery | null = null;
  private paused = false;
  private closed = false;
  /** Aborts the pulls of the window being prepared (services/playback-windows.ts). */
  private windowAbort: AbortController | null = null;
  private generation = 0;
  private pending: Buffer | null = null;
  private wakeUp: (() => void) | null = null;
  /** Output media time at `clockAt` (real ms): the player's clock while playing. */
  private clockMedia = 0;
  private clockAt = 0;
  private mediaEnd = 0;
  /** Wall-clock start of the GOP last sent (survives the end of its stream). */
  private lastSentMs: number | null = null;
  private pendingMs: number | null = null;
  /** Where the next window starts when the current stream runs out (null: it is the last; services/playback-windows.ts). */
  private nextFromMs: number | null = null;

  constructor(
    private readonly socket: WebSocket,
    private readonly deps: PlaybackSessionDeps,
    private readonly camera: string,
    private readonly log: Logger,
  ) {
    socket.on('message', (data, isBinary) => void this.onMessage(isBinary ? null : rawText(data)));
    socket.on('close', () => void this.close());
    socket.on('error', () => void this.close());
    void this.pump();
  }

  private text(msg: Record<string, unknown>): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(JSON.stringify(msg));
  }

  private wake(): void {
    this.wakeUp?.();
    this.wakeUp = null;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private position(): string | null {
    const ms = this.lastSentMs;
    return ms === null ? (this.query ? iso(this.query.fromMs) : null) : iso(ms);
  }

  private async onMessage(text: string | null): Promise<void> {
    try {
      if (text === null) throw new ValidationError('commands are JSON text messages; binary is not accepted');
      const c = parseCommand(text);
      switch (c.cmd) {
        case 'play':
          if (c.from !== undefined || !this.query) {
            this.paused = false;
            await this.start(parsePlaybackQuery({ from: c.from, to: c.to, speed: c.speed, reverse: flagText(c.reverse), iframes: flagText(c.iframes) }));
          } else if (this.paused) {
            this.clockAt = Date.now();
            this.paused = false;
          }
          break;
        case 'pause':
          if (!this.paused) this.clockMedia = this.clock();
          this.paused = true;
          break;
        case 'seek': {
          const q = this.requireQuery('seek');
          const at = parseTimeMs(c.at, 'at');
          await this.start(parsePlaybackQuery({ from: at, speed: q.speed, reverse: flagText(q.reverse), iframes: flagText(q.iframes) }));
          break;
        }
        case 'speed': {
          const q = this.requireQuery('speed');
          // Restart at the GOP last sent (it is sent again in the new mode).
          const at = this.lastSentMs ?? q.fromMs;
          await this.start(
            parsePlaybackQuery({ from: at, speed: c.speed ?? q.speed, reverse: flagText(c.reverse ?? q.reverse), iframes: flagText(c.iframes ?? q.iframes) }),
          );
          break;
        }
        case 'stop':
          await this.close();
          if (this.socket.readyState === this.socket.OPEN) this.socket.close(1000, 'stopped');
          return;
      }
      this.text({ type: 'state', state: this.paused ? 'paused' : 'playing', position: this.position() });
      this.wake();
    } catch (err) {
      const e = toRecorderError(err);
      if (e.status >= 500) this.log.error({ err }, 'playback session command failed');
      this.text({ type: 'error', error: errorBody(e) });
    }
  }

  private requireQuery(cmd: string): PlaybackQuery {
    if (!this.query) throw new ValidationError(`${cmd}: send play with a "from" first`);
    return this.query;
  }

  /** Replaces the current stream; its output continues the session's media timeline. */
  private async start(q: PlaybackQuery): Promise<void> {
    const gen = ++this.generation;
    this.windowAbort?.abort();
    const old = this.stream;
    this.stream = null;
    this.pending = null;
    this.nextFromMs = null;
    await old?.close();
    await this.openWindow(q, gen, false);
  }

  /**
   * Opens the stream of the window `q` starts (services/playback-windows.ts: in a
   * cluster, what other nodes hold of it is pulled here first); false when a newer
   * command replaced it meanwhile. `continuing`: the next window of a stream that ran
   * out, whose player is still playing what was sent (its clock and position go on).
   */
  private async openWindow(q: PlaybackQuery, gen: number, continuing: boolean): Promise<boolean> {
    // One window prepared at a time: a newer command or the close aborts this one's pulls.
    this.windowAbort?.abort();
    const abort = new AbortController();
    this.windowAbort = abort;
    let window: PlaybackWindow;
    try {
      window = await this.deps.service.playbackWindow(this.camera, { fromMs: q.fromMs, toMs: q.toMs, reverse: q.reverse }, abort.signal);
    } finally {
      if (this.windowAbort === abort) this.windowAbort = null;
    }
    if (gen !== this.generation || this.closed) return false;
    const stream = await openPlayback(this.deps, this.camera, { ...q, toMs: window.toMs }, this.mediaEnd);
    if (gen !== this.generation || this.closed) {
      await stream.close();
      return false;
    }
    this.query = q;
    this.stream = stream;
    this.nextFromMs = window.nextFromMs;
    if (!continuing) {
      this.lastSentMs = null;
      this.clockMedia = this.mediaEnd;
      this.clockAt = Date.now();
    }
    if (window.unreachable.length > 0) {
      this.log.warn({ unreachable: window.unreachable }, 'playback session: nodes holding part of the range did not answer; their part is left out');
      this.text({ type: 'partial', unreachable: window.unreachable, position: this.position() });
    }
    this.text({
      type: 'init',
      mimeType: stream.mimeType,
      mode: q.mode.kind,
      speed: q.speed,
      reverse: q.reverse,
      from: iso(stream.firstMs),
      mediaStart: this.mediaEnd,
      ...(stream.droppedAudio.length > 0 ? { audioLeftOut: stream.droppedAudio } : {}),
    });
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(stream.init);
    return true;
  }

  /**
   * The stream of a window ran out and another window follows: opens it (true), or
   * false when there is no more video (NO_VIDEO) or a command replaced the stream.
   */
  private async continueAt(fromMs: number, gen: number): Promise<boolean> {
    const q = this.query;
    if (!q || gen !== this.generation) return false;
    try {
      return await this.openWindow({ ...q, fromMs }, gen, true);
    } catch (err) {
      const e = toRecorderError(err);
      if (e.code === 'NO_VIDEO') return false;
      this.log.warn({ err: e }, 'playback session: the next window could not be opened');
      this.text({ type: 'error', error: errorBody(e) });
      return false;
    }
  }

  /** Where the player should be now (output seconds), if it plays in real time. */
  private clock(): number {
    return this.paused ? this.clockMedia : this.clockMedia + (Date.now() - this.clockAt) / 1000;
  }

  private async pump(): Promise<void> {
    while (!this.closed) {
      const stream = this.stream;
      if (!stream || this.paused) {
        await this.sleep(1000);
        continue;
      }
      if (this.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        await this.sleep(POLL_MS);
        continue;
      }
      const ahead = this.mediaEnd - this.clock();
      if (ahead > LEAD_SEC) {
        await this.sleep(Math.min(250, (ahead - LEAD_SEC) * 1000));
        continue;
      }
      const gen = this.generation;
      if (!this.pending) {
        let parts: Buffer[] | null;
        try {
          parts = await stream.next();
        } catch (err) {
          if (gen !== this.generation) continue; // replaced meanwhile: the old stream's error is moot
          const e = toRecorderError(err);
          this.log.warn({ err: e }, 'playback session stream failed');
          this.text({ type: 'error', error: errorBody(e) });
          this.stream = null;
          await stream.close();
          continue;
        }
        if (gen !== this.generation) continue;
        if (!parts) {
          const next = this.nextFromMs;
          this.stream = null;
          this.nextFromMs = null;
          await stream.close();
          if (next !== null && (stream.endReason ?? 'end') === 'end' && (await this.continueAt(next, gen))) continue;
          if (gen !== this.generation) continue;
          this.text({ type: 'end', reason: stream.endReason ?? 'end', position: this.position() });
          continue;
        }
        this.pending = Buffer.concat(parts);
        this.pendingMs = stream.positionMs;
        this.mediaEnd = Math.max(this.mediaEnd, stream.mediaEndSec);
      }
      // A pause that arrived while the fragment was read holds it until play.
      if (this.paused) continue;
      if (this.socket.readyState !== this.socket.OPEN) break;
      this.socket.send(this.pending);
      this.pending = null;
      this.lastSentMs = this.pendingMs;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    this.windowAbort?.abort();
    this.pending = null;
    this.wake();
    const s = this.stream;
    this.stream = null;
    await s?.close();
  }
}

export function registerPlaybackSessions(app: FastifyInstance, deps: HttpDeps): void {
  app.route<{ Params: { id: string } }>({
    method: 'GET',
    url: '/api/cameras/:id/playback',
    // Runs before the upgrade: an unknown camera gets a plain HTTP 404, not a dead socket.
    preValidation: async (req) => {
      deps.service.requireCamera(req.params.id);
    },
    handler: async () => {
      throw new ValidationError('this endpoint speaks WebSocket only: connect with Upgrade: websocket');
    },
    wsHandler: (socket: WebSocket, req) => {
      const camera = req.params.id;
      new PlaybackSession(socket, deps, camera, deps.log.child({ camera, session: 'playback' }));
    },
  });
}
