/**
 * Owns the camera actors of this node: creates one per camera with the node's
 * implementations injected (provideCamera: clock, gap and recording stores, the ingest
 * attempt), reconfigures, stops and removes them, and forwards plans, events, manual
 * recording and pool state to them; each actor starts and stops its own ingest at its
 * plan's boundaries. It talks to each actor only by events and hears from it only by
 * what it emits (status, alarms, attempt ends).
 * `shutdown()` stops every actor and waits until every open segment has been closed
 * (docs/operations.md "Shutdown": exit 0 on SIGTERM after closing every open segment).
 *
 * Ingest attempts are owned per camera: removing one camera waits only for that
 * camera's segment to close, never for the other cameras' ingest (which runs for as
 * long as they record).
 *
 * Containment: an error thrown inside one camera's actor (an action, a guard, its
 * context) stops that actor only. The supervisor observes it, ends the actor's ingest
 * attempt (xstate leaves the children of an actor that failed in an action running),
 * raises a `camera-fault` alarm, shows the camera in `backoff` with the error, and
 * starts a fresh actor for it after 1 s doubling to 30 s (reset once it records
 * again). No other camera notices; the process never exits for it.
 */
import { createActor, type ActorRefFrom } from 'xstate';
import { provideCamera, stateName, type CameraInput } from './camera-machine.ts';
import { ingestActor } from './ingest-actor.ts';
import type { CameraDeps, CameraStateName, IngestAttempt } from './deps.ts';
import type { CameraConfig, SchedulePlan } from '../index/records.ts';
import type { CameraEvent } from '../schedule/events.ts';
import { eventRecorded } from '../schedule/recording.ts';
import { accountedUntilMs } from '../index/gap-ledger.ts';
import { iso } from '../lib/time.ts';
import { assertRunning, followSignal } from '../lib/lifecycle.ts';
import { LiveHub, type LiveStats, type LiveSubscribeOptions } from '../live/live-hub.ts';
import type { LiveSink, LiveViewer } from '../live/live-fanout.ts';

type CameraLogic = ReturnType<typeof provideCamera>;
type CameraActor = ActorRefFrom<CameraLogic>;

export interface CameraLiveState {
  state: CameraStateName;
  lastError: string | null;
  lastEndMs: number | null;
  manual: boolean;
}

/** Restart delay after a camera actor's fault: doubles per fault in a row, up to the max. */
const FAULT_RESTART_MIN_MS = 1000;
const FAULT_RESTART_MAX_MS = 30_000;

interface TrackedAttempt {
  /** Settles (never rejects) once the attempt's segment is closed. */
  settled: Promise<void>;
  stop: () => void;
}

/** A camera whose actor failed, until its new actor records. */
interface CameraFault {
  /** Faults in a row (the restart delay doubles with each). */
  count: number;
  error: string;
  restart: NodeJS.Timeout | null;
}

export class Supervisor {
  private readonly actors = new Map<string, CameraActor>();
  /** Each camera's running ingest attempts (normally one; two while one is closing). */
  private readonly attempts = new Map<string, Set<TrackedAttempt>>();
  private readonly faults = new Map<string, CameraFault>();
  /** Aborted by shutdown() or with the node's signal (lib/lifecycle.ts): no camera starts after. */
  private readonly life: AbortController;
  /** Pools whose storage refuses writes, and why. */
  private readonly blockedPools = new Map<string, string>();
  private readonly deps: CameraDeps;
  private readonly logic: CameraLogic;
  /** Live fan-out of every running ingest; fed by the ingest children, read through subscribeLive. */
  private readonly liveHub: LiveHub;

  constructor(deps: Omit<CameraDeps, 'attempt' | 'live'>, signal?: AbortSignal) {
    this.liveHub = new LiveHub({ ffmpegPath: deps.config.ffmpegPath, log: deps.log });
    this.life = followSignal(signal);
    // The node stops: live viewers are told at once (HTTP, stopped before the cameras, need not wait for them).
    this.life.signal.addEventListener('abort', () => this.liveHub.closeAll('recorder stopping'), { once: true });
    this.deps = { ...deps, attempt: (camera, attempt) => this.ownAttempt(camera, attempt), live: this.liveHub };
    const { index, log, clock } = this.deps;
    this.logic = provideCamera({
      clock,
      storeGap: (gap) => void index.gaps.put(gap).catch((err: Error) => log.error({ camera: gap.camera, err }, 'could not store gap')),
      storeRecording: (camera, state) => void index.recording.put(camera, state).catch((err: Error) => log.error({ camera, err }, 'could not persist events')),
      ingest: ingestActor(this.deps),
    });
  }

  private ownAttempt(camera: string, attempt: IngestAttempt): void {
    let set = this.attempts.get(camera);
    if (!set) this.attempts.set(camera, (set = new Set()));
    const mine = set;
    const tracked: TrackedAttempt = {
      stop: attempt.stop,
      settled: attempt.done
        .then(
          () => undefined,
          (err: unknown) => this.deps.log.error({ camera, err }, 'camera work failed'),
        )
        .finally(() => {
          mine.delete(tracked);
          if (mine.size === 0 && this.attempts.get(camera) === mine) this.attempts.delete(camera);
        }),
    };
    mine.add(tracked);
  }

  private get stopping(): boolean {
    return this.life.signal.aborted;
  }

  /** Throws SHUTTING_DOWN once the node stops: a camera put then must start nothing. */
  upsert(camera: CameraConfig, plan?: SchedulePlan): void {
    assertRunning(this.life.signal, `starting camera ${camera.id}`);
    const existing = this.actors.get(camera.id);
    if (existing && existing.getSnapshot().status === 'active') {
      existing.send({ type: 'RECONFIGURE', camera });
      existing.send({ type: 'STORAGE', blocked: this.blockedPools.get(camera.pool) ?? null });
      return;
    }
    // New, or its actor failed: a new config starts a fresh actor at once.
    this.clearFault(camera.id);
    this.spawn(camera, plan ?? this.deps.index.schedules.get(camera.id));
  }

  /** What a new actor starts from: the index's view of the camera (read here, handed over as data). */
  private inputFor(camera: CameraConfig, plan: SchedulePlan | undefined): CameraInput {
    const { index, config } = this.deps;
    return {
      camera,
      plan,
      saved: index.recording.get(camera.id),
      // What the index accounts for (video or a gap record, e.g. the recorder-down gap
      // the back-fill manager recorded at start): a new gap starts after it.
      accountedUntilMs: accountedUntilMs(index, camera.id),
      backoff: { initialMs: config.backoffInitialMs, maxMs: config.backoffMaxMs },
    };
  }

  private spawn(camera: CameraConfig, plan: SchedulePlan | undefined): void {
    let input: CameraInput;
    try {
      input = this.inputFor(camera, plan);
    } catch (err) {
      // The index read failed: a fault of this camera like any other (restarted later).
      this.actors.delete(camera.id);
      this.contain(camera.id, undefined, err, camera);
      return;
    }
    const actor = createActor(this.logic, { input });
    this.actors.set(camera.id, actor);
    const { log } = this.deps;
    actor.on('status', (s) => {
      // Recording again after a fault: the next fault starts from the shortest delay.
      if (s.state === 'recording' && this.faults.get(camera.id)?.restart === null) this.faults.delete(camera.id);
      this.deps.publishStatus({
        camera: camera.id,
        state: s.state,
        at: iso(this.deps.clock.nowMs()),
        ...(s.detail !== undefined ? { detail: s.detail } : {}),
        ...(s.media ? { audio: s.media.audio, transportInUse: s.media.transportInUse, ingest: s.media.ingest } : {}),
      });
    });
    actor.on('alarm', (a) => this.deps.raiseAlarm(a.alarm));
    actor.on('ingest.ended', (e) => {
      if (e.cause !== undefined) log.error({ camera: camera.id, err: e.cause, retryInMs: e.retryInMs }, 'ingest attempt failed to start');
      else log.warn({ camera: camera.id, error: e.error, retryInMs: e.retryInMs }, 'ingest ended');
    });
    actor.subscribe({ error: (err) => this.contain(camera.id, actor, err) });
    actor.start();
    const blocked = this.blockedPools.get(camera.pool);
    if (blocked !== undefined && actor.getSnapshot().status === 'active') actor.send({ type: 'STORAGE', blocked });
  }

  /**
   * One camera's actor failed (or could not be made: `actor` undefined): end its
   * attempt, alarm, start it again later (module comment).
   */
  private contain(cameraId: string, actor: CameraActor | undefined, err: unknown, config?: CameraConfig): void {
    if (this.actors.get(cameraId) !== actor || this.stopping) return;
    const camera = config ?? actor?.getSnapshot().context.camera;
    if (!camera) return;
    for (const a of this.attempts.get(cameraId) ?? []) a.stop();
    this.liveHub.close(cameraId, 'camera restarting after a fault');
    const error = err instanceof Error ? err.message : String(err);
    const count = (this.faults.get(cameraId)?.count ?? 0) + 1;
    const delayMs = Math.min(FAULT_RESTART_MIN_MS * 2 ** (count - 1), FAULT_RESTART_MAX_MS);
    const fault: CameraFault = { count, error, restart: null };
    this.faults.set(cameraId, fault);
    this.deps.log.error({ camera: cameraId, err, faults: count, restartInMs: delayMs }, 'camera actor failed; it is restarted, other cameras go on');
    this.deps.raiseAlarm({
      kind: 'camera-fault',
      camera: cameraId,
      message: `camera ${cameraId} failed inside the recorder (${error}); restarting in ${delayMs} ms`,
      details: { faults: count },
    });
    fault.restart = setTimeout(() => {
      fault.restart = null;
      if (this.actors.get(cameraId) !== actor || this.stopping || this.faults.get(cameraId) !== fault) return;
      let plan: SchedulePlan | undefined;
      try {
        plan = this.deps.index.schedules.get(cameraId);
      } catch (e) {
        this.contain(cameraId, actor, e, camera);
        return;
      }
      // spawn reports actor errors (and a failed index read of its input) to contain().
      this.spawn(camera, plan);
    }, delayMs);
    fault.restart.unref();
  }

  private clearFault(cameraId: string): void {
    const fault = this.faults.get(cameraId);
    if (fault?.restart) clearTimeout(fault.restart);
    this.faults.delete(cameraId);
  }

  /** Actors that take events (a failed one waits for its restart). */
  private *running(): Iterable<CameraActor> {
    for (const actor of this.actors.values()) if (actor.getSnapshot().status === 'active') yield actor;
  }

  private activeActor(cameraId: string): CameraActor | undefined {
    const actor = this.actors.get(cameraId);
    return actor?.getSnapshot().status === 'active' ? actor : undefined;
  }

  setPlan(plan: SchedulePlan): void {
    this.activeActor(plan.camera)?.send({ type: 'PLAN', plan });
  }

  /** Hands an event to the camera; returns whether it is being recorded (a slot or manual is on). */
  event(cameraId: string, event: CameraEvent): boolean {
    const actor = this.activeActor(cameraId);
    if (!actor) return false;
    actor.send({ type: 'EVENT', event });
    return eventRecorded(actor.getSnapshot().context.recording, event.atMs);
  }

  /** The pool's storage refuses writes (reason) or accepts them again (null): tells its cameras. */
  setStorageBlocked(pool: string, reason: string | null): void {
    if (reason === null) this.blockedPools.delete(pool);
    else this.blockedPools.set(pool, reason);
    for (const actor of this.running()) {
      if (actor.getSnapshot().context.camera.pool === pool) actor.send({ type: 'STORAGE', blocked: reason });
    }
  }

  manual(cameraId: string, on: boolean): void {
    this.activeActor(cameraId)?.send({ type: 'MANUAL', on });
  }

  /** Stops and forgets one camera; resolves once its open segment is closed (and only its). */
  async remove(cameraId: string): Promise<void> {
    const actor = this.actors.get(cameraId);
    this.clearFault(cameraId);
    if (!actor) return;
    this.actors.delete(cameraId);
    if (actor.getSnapshot().status === 'active') actor.send({ type: 'STOP' });
    actor.stop();
    for (const a of this.attempts.get(cameraId) ?? []) a.stop();
    this.liveHub.close(cameraId, 'camera removed');
    await this.settle(cameraId);
  }

  has(cameraId: string): boolean {
    return this.actors.has(cameraId) || this.faults.has(cameraId);
  }

  live(cameraId: string): CameraLiveState | undefined {
    const actor = this.actors.get(cameraId);
    const fault = this.faults.get(cameraId);
    if (!actor) {
      // Its actor could not even be made (the index read failed): it waits for its restart.
      return fault ? { state: 'backoff', lastError: `camera actor failed: ${fault.error}; restarting`, lastEndMs: null, manual: false } : undefined;
    }
    const snap = actor.getSnapshot();
    const { lastEndMs, recording } = snap.context;
    if (snap.status !== 'active') {
      return { state: 'backoff', lastError: `camera actor failed: ${fault?.error ?? 'unknown error'}; restarting`, lastEndMs, manual: recording.manual };
    }
    return { state: stateName(snap.value), lastError: snap.context.lastError, lastEndMs, manual: recording.manual };
  }

  /**
   * Subscribes a live viewer to the camera's running ingest (or its low-res H.264
   * preview). Until ingest runs the viewer waits; it gets every new init and the
   * fragments that follow. The caller closes the viewer when its client leaves.
   */
  subscribeLive(cameraId: string, sink: LiveSink, opts: LiveSubscribeOptions): LiveViewer {
    return this.liveHub.subscribe(cameraId, sink, opts);
  }

  liveStats(cameraId: string): LiveStats {
    return this.liveHub.stats(cameraId);
  }

  /** Waits for the segment closes in flight of one camera, or of every camera. */
  async settle(cameraId?: string): Promise<void> {
    const pending = (): Promise<void>[] =>
      cameraId === undefined
        ? [...this.attempts.values()].flatMap((set) => [...set].map((a) => a.settled))
        : [...(this.attempts.get(cameraId) ?? [])].map((a) => a.settled);
    for (let p = pending(); p.length > 0; p = pending()) await Promise.allSettled(p);
  }

  async shutdown(): Promise<void> {
    this.life.abort();
    for (const id of [...this.faults.keys()]) this.clearFault(id);
    for (const actor of this.actors.values()) {
      if (actor.getSnapshot().status === 'active') actor.send({ type: 'STOP' });
      actor.stop();
    }
    this.actors.clear();
    for (const set of this.attempts.values()) for (const a of set) a.stop();
    this.liveHub.closeAll('recorder stopping');
    await this.settle();
  }
}
