/**
 * Owns the camera actors of this node: creates one per camera, reconfigures, stops
 * and removes them, forwards plans, events and manual recording to them, and starts or
 * stops their ingest as their plans say. It talks to each actor only by events.
 * `shutdown()` stops every actor and waits until every open segment has been closed
 * (CONTRACT.md: exit 0 on SIGTERM after closing every open segment).
 */
import { createActor, type ActorRefFrom } from 'xstate';
import { cameraMachine, stateName } from './camera-machine.ts';
import type { CameraDeps, CameraStateName } from './deps.ts';
import type { CameraConfig, SchedulePlan } from '../index/records.ts';
import type { CameraEvent } from '../schedule/events.ts';
import { LiveHub, type LiveStats, type LiveSubscribeOptions } from '../media/live-hub.ts';
import type { LiveSink, LiveViewer } from '../media/live-fanout.ts';

type CameraActor = ActorRefFrom<typeof cameraMachine>;

export interface CameraLiveState {
  state: CameraStateName;
  lastError: string | null;
  lastEndMs: number | null;
  manual: boolean;
}

/** How often plans are re-evaluated: slot boundaries are met within a second. */
const PLAN_TICK_MS = 1000;

export class Supervisor {
  private readonly actors = new Map<string, CameraActor>();
  private readonly inflight = new Set<Promise<unknown>>();
  /** Pools whose storage refuses writes, and why. */
  private readonly blockedPools = new Map<string, string>();
  private readonly planTimer: NodeJS.Timeout;
  private readonly deps: CameraDeps;
  /** Live fan-out of every running ingest; fed by the ingest children, read through subscribeLive. */
  private readonly liveHub: LiveHub;

  constructor(deps: Omit<CameraDeps, 'track' | 'live'>) {
    this.liveHub = new LiveHub({ ffmpegPath: deps.config.ffmpegPath, log: deps.log });
    this.deps = { ...deps, track: (work) => this.track(work), live: this.liveHub };
    this.planTimer = setInterval(() => this.applyPlans(), PLAN_TICK_MS);
    this.planTimer.unref();
  }

  private track(work: Promise<unknown>): void {
    const p = work.catch((err: unknown) => this.deps.log.error({ err }, 'camera work failed')).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  upsert(camera: CameraConfig, plan?: SchedulePlan): void {
    const existing = this.actors.get(camera.id);
    if (existing) {
      existing.send({ type: 'RECONFIGURE', camera });
      existing.send({ type: 'STORAGE', blocked: this.blockedPools.get(camera.pool) ?? null });
      return;
    }
    const actor = createActor(cameraMachine, { input: { camera, deps: this.deps, plan } });
    this.actors.set(camera.id, actor);
    actor.start();
    const blocked = this.blockedPools.get(camera.pool);
    if (blocked !== undefined) actor.send({ type: 'STORAGE', blocked });
  }

  setPlan(plan: SchedulePlan): void {
    this.actors.get(plan.camera)?.send({ type: 'PLAN', plan });
    this.applyPlans();
  }

  /** Hands an event to the camera; returns whether it is being recorded (a slot or manual is on). */
  event(cameraId: string, event: CameraEvent): boolean {
    const actor = this.actors.get(cameraId);
    if (!actor) return false;
    actor.send({ type: 'EVENT', event });
    this.applyPlans();
    return actor.getSnapshot().context.director.wantsIngest(event.atMs);
  }

  /** The pool's storage refuses writes (reason) or accepts them again (null): tells its cameras. */
  setStorageBlocked(pool: string, reason: string | null): void {
    if (reason === null) this.blockedPools.delete(pool);
    else this.blockedPools.set(pool, reason);
    for (const actor of this.actors.values()) {
      if (actor.getSnapshot().context.camera.pool === pool) actor.send({ type: 'STORAGE', blocked: reason });
    }
  }

  manual(cameraId: string, on: boolean): void {
    this.actors.get(cameraId)?.send({ type: 'MANUAL', on });
    this.applyPlans();
  }

  /** Starts or stops each camera's ingest as its plan, events and manual flag say now. */
  applyPlans(): void {
    const now = this.deps.clock.nowMs();
    for (const actor of this.actors.values()) {
      const snap = actor.getSnapshot();
      const want = snap.context.director.wantsIngest(now);
      const state = stateName(snap.value);
      if (want && state === 'stopped') actor.send({ type: 'START' });
      else if (!want && state !== 'stopped') actor.send({ type: 'STOP' });
      else if (want && (state === 'connecting' || state === 'recording')) {
        const { director, camera, stream } = snap.context;
        const wanted = director.streamAt(now, camera.record.stream);
        if (wanted !== stream && camera.streams[wanted]) actor.send({ type: 'SWITCH_STREAM' });
      }
    }
  }

  async remove(cameraId: string): Promise<void> {
    const actor = this.actors.get(cameraId);
    if (!actor) return;
    this.actors.delete(cameraId);
    actor.send({ type: 'STOP' });
    actor.stop();
    this.liveHub.close(cameraId, 'camera removed');
    await this.settle();
  }

  has(cameraId: string): boolean {
    return this.actors.has(cameraId);
  }

  live(cameraId: string): CameraLiveState | undefined {
    const actor = this.actors.get(cameraId);
    if (!actor) return undefined;
    const snap = actor.getSnapshot();
    return { state: stateName(snap.value), lastError: snap.context.lastError, lastEndMs: snap.context.lastEndMs, manual: snap.context.director.manualOn };
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

  /** Waits for segment closes in flight. */
  async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  async shutdown(): Promise<void> {
    clearInterval(this.planTimer);
    for (const actor of this.actors.values()) {
      actor.send({ type: 'STOP' });
      actor.stop();
    }
    this.actors.clear();
    this.liveHub.closeAll('recorder stopping');
    await this.settle();
  }
}
