/**
 * The back-fill manager of a node: decides when gaps are fetched from the cameras'
 * edge storage and runs the attempts (backfill/attempt.ts) with bounded concurrency.
 *
 * When (issue "Back-fill gaps from the camera's edge storage"):
 * - at start: gaps the recorder itself left (it was down) are put in the ledger, from
 *   each camera's last segment or gap to now where its plan asks for timing recording;
 *   gaps still `open` from before are closed at the start; due records are queued;
 * - automatically, `backfillDelayMs` after a camera is recording again (its SD card
 *   has flushed by then);
 * - periodically (`backfillSyncIntervalMs`): holes of the last `backfillSyncHours` (not
 *   before the camera's first segment, not in the last SYNC_MARGIN_MS) that the plan
 *   wanted and nothing accounts for become gaps and are queued, with every due record;
 * - on demand (`rec.v1.backfill`, `POST /api/cameras/:id/backfill`).
 *
 * Bounds: at most `backfillConcurrency` attempts on the node and one per camera (so a
 * camera's uplink carries one replay besides its live stream); a failed attempt is
 * retried after `backfillRetryMs` doubling, `backfillMaxAttempts` times, then the gap is
 * `unavailable` and a `backfill-failed` alarm is raised. Progress is published on
 * `rec.v1.backfill.<camera>` and is the gap state that search shows.
 *
 * Per camera, a back-fill actor (backfill/machine.ts) runs the attempts one at a time;
 * this manager reads and writes the ledger, injects the actors' work with `.provide()`
 * (claim, attempt, release, checkDue), counts the node's slots, and publishes and logs
 * what the actors emit. An attempt that throws gives its record back to the ledger
 * (releaseAttempt) instead of leaving it `fetching`.
 */
import { rm } from 'node:fs/promises';
import { createActor, fromPromise, type ActorRefFrom } from 'xstate';
import { followSignal } from '../lib/lifecycle.ts';
import type { RecorderIndex } from '../index/db.ts';
import { splitAt, subtract, timingIntervals, type Interval } from '../index/gap-ledger.ts';
import type { CameraConfig, GapRecord, GapState, SchedulePlan, SegmentRecord } from '../index/records.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { RecorderConfig } from '../lib/config.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { iso, type Clock } from '../lib/time.ts';
import { MIN_HOLE_MS, releaseAttempt, runAttempt, stagingDir, type AttemptDeps, type AttemptResult } from './attempt.ts';
import { backfillMachine, type AttemptOutcome } from './machine.ts';

export type BackfillOrigin = 'auto' | 'periodic' | 'manual' | 'start';

/** A `rec.v1.backfill.<camera>` message. */
export interface BackfillProgress {
  camera: string;
  from: string;
  to: string;
  state: GapState;
  attempts: number;
  at: string;
  error?: { code: string; message: string };
}

export interface BackfillDeps {
  index: RecorderIndex;
  config: RecorderConfig;
  clock: Clock;
  log: Logger;
  /** The camera's configuration (persisted or transient), if it exists. */
  camera: (id: string) => CameraConfig | undefined;
  cameras: () => CameraConfig[];
  raiseAlarm: (alarm: AlarmInput) => void;
  publish: (progress: BackfillProgress) => void;
  onSegmentClosed?: (segment: SegmentRecord) => void;
  /** The edge pull (tests inject a fake camera); default ingest/edge-replay.ts. */
  pull?: AttemptDeps['pull'];
  /** The node's shutdown signal (lib/lifecycle.ts): when it aborts, pulls end and nothing new starts. */
  signal?: AbortSignal;
}

type ClosedGap = GapRecord & { endMs: number };

const FAILED = {
  claim: 'back-fill: a due gap could not be marked fetching; it stays due',
  attempt: 'back-fill attempt crashed; its gap is given back for a retry',
  release: "back-fill: a crashed attempt's gap could not be given back; claimed again after backfillRetryMs",
} as const;

/** The last moments are still arriving (the GOP being cut) or being flushed: the sync leaves them alone. */
const SYNC_MARGIN_MS = 10_000;

export class BackfillManager {
  /** One back-fill actor per camera that has had something to fetch. */
  private readonly actors = new Map<string, ActorRefFrom<typeof backfillMachine>>();
  /** Cameras waiting for a node slot, in the order they asked. */
  private readonly waiting: string[] = [];
  /** Cameras holding a node slot (an attempt claimed, running or being given back). */
  private readonly holding = new Set<string>();
  /** The actors' work in flight (a stop waits for it). */
  private readonly running = new Set<Promise<unknown>>();
  /** Aborted by stop() or with the node's signal: running pulls end, no attempt starts. */
  private readonly abort: AbortController;
  private syncTimer: NodeJS.Timeout | null = null;
  private readonly logic;

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  constructor(private readonly deps: BackfillDeps) {
    this.abort = followSignal(deps.signal);
    this.logic = backfillMachine.provide({
      actors: {
        claim: fromPromise(({ input }) => this.track(this.claim(input.camera, input.startMs))),
        attempt: fromPromise(({ input }) => this.track(this.attempt(input.gap))),
        release: fromPromise(({ input }) => this.track(this.release(input.gap, input.error))),
      },
      actions: {
        checkDue: (_, { camera }) => this.queueDue(camera, 'auto'),
      },
    });
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.running.add(work);
    void work.finally(() => this.running.delete(work)).catch(() => undefined);
    return work;
  }

  /** The camera's back-fill actor (made on first need). */
  private actor(cameraId: string): ActorRefFrom<typeof backfillMachine> | null {
    if (this.stopped) return null;
    let actor = this.actors.get(cameraId);
    if (actor) return actor;
    const { config, log } = this.deps;
    actor = createActor(this.logic, { input: { camera: cameraId, sdFlushMs: config.backfillDelayMs, retryMs: config.backfillRetryMs } });
    actor.on('slot.wanted', (e) => {
      if (!this.waiting.includes(e.camera)) this.waiting.push(e.camera);
      this.pump();
    });
    actor.on('slot.freed', (e) => {
      this.holding.delete(e.camera);
      this.pump();
    });
    actor.on('progress', (e) => this.publish(e.gap));
    actor.on('alarm', (e) => this.deps.raiseAlarm(e.alarm));
    actor.on('failed', (e) => log.error({ camera: e.camera, gapStartMs: e.startMs, stage: e.stage, err: e.error }, FAILED[e.stage]));
    const ref = actor;
    actor.subscribe({
      error: (err) => {
        // Its slot and place in line go; the camera's next due record makes a new actor.
        log.error({ camera: cameraId, err }, 'back-fill actor failed');
        if (this.actors.get(cameraId) === ref) this.actors.delete(cameraId);
        this.holding.delete(cameraId);
        this.waiting.splice(0, this.waiting.length, ...this.waiting.filter((c) => c !== cameraId));
        this.pump();
      },
    });
    this.actors.set(cameraId, ref);
    ref.start();
    return ref;
  }

  /** Grants node slots to waiting cameras while there are any (one attempt per camera: its actor). */
  private pump(): void {
    while (!this.stopped && this.holding.size < this.deps.config.backfillConcurrency && this.waiting.length > 0) {
      const camera = this.waiting.shift()!;
      const actor = this.actors.get(camera);
      if (!actor) continue;
      this.holding.add(camera);
      actor.send({ type: 'GO' });
    }
  }

  /** Before the camera actors start: recorder-down gaps into the ledger, due work queued. */
  async start(): Promise<void> {
    const { clock, config } = this.deps;
    await rm(stagingDir(config.dataDir), { recursive: true, force: true });
    const nowMs = clock.nowMs();
    for (const camera of this.deps.cameras()) {
      if (camera.transient) continue;
      await this.recorderDownGaps(camera, nowMs);
    }
    for (const camera of this.deps.cameras()) this.queueDue(camera.id, 'start');
    if (config.backfillSyncHours > 0) {
      this.syncTimer = setInterval(
        () => void this.sync().catch((err: unknown) => this.deps.log.error({ err }, 'back-fill sync failed')),
        config.backfillSyncIntervalMs,
      );
      this.syncTimer.unref();
    }
  }

  /**
   * The recorder was not running from what the index accounts for until now: where the
   * plan wanted timing recording, that is a gap. Gaps left `open` end now.
   */
  private async recorderDownGaps(camera: CameraConfig, nowMs: number): Promise<void> {
    const { index } = this.deps;
    const put: GapRecord[] = [];
    let until = index.segments.last(camera.id)?.endMs ?? null;
    for (const value of index.gaps.ofCamera(camera.id)) {
      if (value.endMs === null) put.push({ ...value, endMs: Math.max(nowMs, value.startMs + 1), state: 'pending' });
      else if (value.state === 'fetching') put.push({ ...value, state: 'pending' }); // cut by a crash
      const end = value.endMs ?? nowMs;
      if (until === null || end > until) until = end;
    }
    if (until !== null && nowMs - until >= MIN_HOLE_MS) {
      const plan: SchedulePlan | undefined = index.schedules.get(camera.id);
      for (const i of timingIntervals(plan, until, nowMs)) {
        if (i.toMs - i.fromMs >= MIN_HOLE_MS)
          put.push({ camera: camera.id, startMs: i.fromMs, endMs: i.toMs, state: 'pending', reason: 'recorder was not running', attempts: 0 });
      }
    }
    if (put.length > 0) {
      await index.gaps.replace(camera.id, [], put);
      this.deps.log.info({ camera: camera.id, gaps: put.length }, 'gaps from before the start recorded');
    }
  }

  /** A camera is recording again: its closed gaps are fetched after the SD-card delay. */
  cameraRecording(cameraId: string): void {
    if (!this.deps.camera(cameraId)?.edge) return;
    this.actor(cameraId)?.send({ type: 'RECORDING' });
  }

  /**
   * On demand: every hole of [fromMs, toMs) without video becomes (or stays) a gap
   * record and is queued now, whatever its attempts so far. Returns the records.
   */
  async request(cameraId: string, fromMs: number, toMs: number): Promise<GapRecord[]> {
    const camera = this.deps.camera(cameraId);
    if (!camera?.edge) throw new RecorderError('EDGE_NOT_CONFIGURED', `camera ${cameraId} has no edge storage configured (edge.replayUrl)`);
    const nowMs = this.deps.clock.nowMs();
    if (toMs > nowMs) throw new RecorderError('BAD_RANGE', `to (${iso(toMs)}) is in the future: only past video can be back-filled`);
    const { index } = this.deps;
    const window = { fromMs, toMs };
    const overlapping = index.gaps.closedInRange(cameraId, fromMs, toMs);
    // A record being fetched is left whole: its attempt replaces it when it ends.
    const busy = overlapping.filter((g) => g.state === 'fetching');
    const existing = overlapping.filter((g) => g.state !== 'fetching');
    const split = splitAt(existing, [fromMs, toMs]);
    const video: Interval[] = index.segments.timesInRange(cameraId, fromMs, toMs).map((s) => ({ fromMs: s.startMs, toMs: s.endMs }));
    const recorded = [...split, ...busy].map((g) => ({ fromMs: g.startMs, toMs: g.endMs! }));
    const fresh: GapRecord[] = subtract(window, [...video, ...recorded], MIN_HOLE_MS).map((h) => ({
      camera: cameraId,
      startMs: h.fromMs,
      endMs: h.toMs,
      state: 'pending',
      reason: 'manual back-fill',
      attempts: 0,
    }));
    const inside = split.map((g) => {
      const within = g.startMs >= fromMs && g.endMs! <= toMs;
      const retry = within && (g.state === 'pending' || g.state === 'partial' || g.state === 'unavailable');
      if (!retry) return g;
      const { nextAttemptMs: _drop, ...rest } = g;
      return { ...rest, state: 'pending' as const, attempts: 0 };
    });
    await index.gaps.replace(
      cameraId,
      existing.map((g) => g.startMs),
      [...inside, ...fresh],
    );
    const wanted = [...inside, ...fresh].filter((g) => g.startMs >= fromMs && g.endMs! <= toMs).sort((a, b) => a.startMs - b.startMs);
    for (const g of wanted) if (g.state === 'pending') this.enqueue(cameraId, g.startMs);
    this.deps.log.info({ camera: cameraId, fromMs, toMs, gaps: wanted.length }, 'manual back-fill requested');
    return wanted;
  }

  /** The periodic sync (also callable by tests and operators). */
  async sync(): Promise<void> {
    const { index, clock, config } = this.deps;
    const nowMs = clock.nowMs();
    const toMs = nowMs - Math.max(SYNC_MARGIN_MS, config.backfillDelayMs);
    for (const camera of this.deps.cameras()) {
      if (!camera.edge || camera.transient) continue;
      // Only between video we have: before a camera's first segment it was not ours.
      const it = index.segments.all(camera.id)[Symbol.iterator]();
      const first = it.next().value;
      it.return?.(); // ends the LMDB range read
      if (!first) continue;
      const fromMs = Math.max(nowMs - config.backfillSyncHours * 3600_000, first.startMs);
      if (toMs <= fromMs) continue;
      const plan = index.schedules.get(camera.id);
      const video: Interval[] = index.segments.timesInRange(camera.id, fromMs, toMs).map((s) => ({ fromMs: s.startMs, toMs: s.endMs }));
      const known: Interval[] = index.gaps.inRange(camera.id, fromMs, toMs, nowMs).map((g) => ({ fromMs: g.startMs, toMs: g.endMs ?? nowMs }));
      const fresh: GapRecord[] = [];
      for (const want of timingIntervals(plan, fromMs, toMs)) {
        for (const h of subtract(want, [...video, ...known], MIN_HOLE_MS))
          fresh.push({ camera: camera.id, startMs: h.fromMs, endMs: h.toMs, state: 'pending', reason: 'found by the periodic sync', attempts: 0 });
      }
      if (fresh.length > 0) await index.gaps.replace(camera.id, [], fresh);
      this.queueDue(camera.id, 'periodic');
    }
  }

  /** Queues the camera's closed records that wait for an attempt (now or at their time). */
  private queueDue(cameraId: string, origin: BackfillOrigin): void {
    const camera = this.deps.camera(cameraId);
    if (!camera?.edge || this.stopped) return;
    const nowMs = this.deps.clock.nowMs();
    for (const g of this.deps.index.gaps.ofCamera(cameraId)) {
      if (g.endMs === null || (g.state !== 'pending' && g.state !== 'partial')) continue;
      const wait = (g.nextAttemptMs ?? 0) - nowMs;
      this.actor(cameraId)?.send({ type: 'DUE', startMs: g.startMs, ...(wait > 0 ? { inMs: wait } : {}) });
    }
    this.deps.log.debug({ camera: cameraId, origin }, 'back-fill queue checked');
  }

  private enqueue(camera: string, startMs: number): void {
    this.actor(camera)?.send({ type: 'DUE', startMs });
  }

  /** Marks a due record `fetching` for its actor (null: it is no longer due, or its camera is gone). */
  private async claim(cameraId: string, startMs: number): Promise<ClosedGap | null> {
    const gap = this.deps.index.gaps.get(cameraId, startMs);
    if (!gap || gap.endMs === null || !this.deps.camera(cameraId)) return null;
    // `fetching` here is one a release could not give back: only this camera's actor fetches its records.
    if (gap.state !== 'pending' && gap.state !== 'partial' && gap.state !== 'fetching') return null;
    const fetching: ClosedGap = { ...gap, endMs: gap.endMs, state: 'fetching' };
    await this.deps.index.gaps.put(fetching);
    return fetching;
  }

  private async attempt(gap: ClosedGap): Promise<AttemptOutcome> {
    const camera = this.deps.camera(gap.camera);
    if (!camera) throw new RecorderError('CAMERA_NOT_FOUND', `camera ${gap.camera} is gone`);
    return this.outcome(gap, await runAttempt(this.deps, camera, gap, this.abort.signal));
  }

  private async release(gap: ClosedGap, error: unknown): Promise<AttemptOutcome> {
    return this.outcome(gap, await releaseAttempt(this.deps, gap.camera, gap, error, this.abort.signal));
  }

  /** What the actor reports of an attempt: the records, their retries, an alarm if given up. */
  private outcome(gap: ClosedGap, result: AttemptResult): AttemptOutcome {
    const nowMs = this.deps.clock.nowMs();
    const retries = result.records.flatMap((r) =>
      (r.state === 'pending' || r.state === 'partial') && r.nextAttemptMs !== undefined
        ? [{ startMs: r.startMs, inMs: Math.max(0, r.nextAttemptMs - nowMs) }]
        : [],
    );
    const givenUp = result.records.filter((r) => r.state === 'unavailable');
    if (givenUp.length === 0 || this.abort.signal.aborted) return { records: result.records, retries, alarm: null };
    const err = givenUp[0]!.lastError;
    return {
      records: result.records,
      retries,
      alarm: {
        kind: 'backfill-failed',
        camera: gap.camera,
        message:
          `back-fill of ${gap.camera} ${iso(gap.startMs)}..${iso(gap.endMs)} given up after ${givenUp[0]!.attempts} attempt(s): ${err?.code ?? ''} ${err?.message ?? ''}`.trim(),
        details: { from: iso(gap.startMs), to: iso(gap.endMs), gaps: givenUp.map((g) => ({ from: iso(g.startMs), to: iso(g.endMs!) })), error: err },
      },
    };
  }

  private publish(g: GapRecord): void {
    this.deps.publish({
      camera: g.camera,
      from: iso(g.startMs),
      to: iso(g.endMs ?? this.deps.clock.nowMs()),
      state: g.state,
      attempts: g.attempts,
      at: iso(this.deps.clock.nowMs()),
      ...(g.lastError ? { error: g.lastError } : {}),
    });
  }

  /** Ends running pulls (they do not count as attempts), stops the actors (their delayed retries with them), waits. */
  async stop(): Promise<void> {
    this.abort.abort();
    if (this.syncTimer) clearInterval(this.syncTimer);
    for (const a of this.actors.values()) a.stop();
    this.actors.clear();
    this.waiting.length = 0;
    await Promise.allSettled([...this.running]);
  }
}
