/**
 * The camera actor: one per camera, owns its ingest attempts and its gap tracking.
 *
 *   stopped ──START──► active.connecting ──INGEST.RECORDING──► active.recording
 *                         ▲      │ INGEST.EXITED (camera gone, ffmpeg died, write error)
 *                         │      ▼
 *                         └── backoff (1 s doubling to 30 s; reset once recording)
 *   STOP from any state → stopped (kills ffmpeg; the open segment is closed).
 *
 * An attempt that throws while starting goes to backoff as a failed attempt does; an
 * error thrown by this machine itself is contained by the supervisor (actors/supervisor.ts).
 *
 * Gaps: when an attempt fails after video was written, an open gap is stored at the
 * end of the last fragment; when video flows again, the gap is closed at the new
 * segment's start. The same rule covers a recorder that was down: the last segment's
 * end from the index is where the gap starts.
 */
import { assign, setup } from 'xstate';
import { faultPoint } from '../lib/crash-point.ts';
import { iso } from '../lib/time.ts';
import type { CameraConfig, SchedulePlan } from '../index/records.ts';
import type { CameraEvent } from '../schedule/events.ts';
import { RecordingDirector } from './recording-director.ts';
import { accountedUntilMs } from '../index/gap-ledger.ts';
import { ingestActor, type IngestEvent } from './ingest-actor.ts';
import type { CameraDeps, CameraStateName, IngestMedia } from './deps.ts';

/** Video further apart than this across ingest attempts is recorded as a gap. */
export const GAP_MIN_MS = 1000;

export interface CameraInput {
  camera: CameraConfig;
  deps: CameraDeps;
  plan: SchedulePlan | undefined;
}

interface CameraContext {
  camera: CameraConfig;
  deps: CameraDeps;
  backoffMs: number;
  lastEndMs: number | null;
  lastError: string | null;
  /** What the supervisor last asked for (START/STOP); RECONFIGURE keeps it. */
  wantActive: boolean;
  /** Plan, events and manual recording: what is written, as what (shared with ingest). */
  director: RecordingDirector;
  /** The stream the running ingest pulls. */
  stream: 'main' | 'sub';
  /** Start of the gap a full pool is causing, while it lasts. */
  storageGapStartMs: number | null;
  /** What the recording attempt does with audio and which transport it uses (status). */
  media: IngestMedia | null;
}

export type CameraMachineEvent =
  | { type: 'START' }
  | { type: 'STOP' }
  | { type: 'RECONFIGURE'; camera: CameraConfig }
  | { type: 'PLAN'; plan: SchedulePlan | undefined }
  | { type: 'EVENT'; event: CameraEvent }
  | { type: 'MANUAL'; on: boolean }
  | { type: 'SWITCH_STREAM' }
  | { type: 'STORAGE'; blocked: string | null }
  | IngestEvent;

export const cameraMachine = setup({
  types: {
    context: {} as CameraContext,
    events: {} as CameraMachineEvent,
    input: {} as CameraInput,
  },
  actors: { ingest: ingestActor },
  delays: {
    backoff: ({ context }) => context.backoffMs,
  },
  guards: {
    wantActive: ({ context }) => context.wantActive,
  },
  actions: {
    closeGap: ({ context, event }) => {
      if (event.type !== 'INGEST.RECORDING' || context.lastEndMs === null) return;
      if (event.startMs - context.lastEndMs < GAP_MIN_MS) return;
      if (!context.director.shouldWrite(context.lastEndMs)) return; // nothing was due then
      const { deps, camera } = context;
      deps.index
        .putGap({ camera: camera.id, startMs: context.lastEndMs, endMs: event.startMs, state: 'pending', reason: context.lastError ?? 'recorder was not running', attempts: 0 })
        .catch((err: Error) => deps.log.error({ camera: camera.id, err }, 'could not store gap'));
    },
    openGap: ({ context }) => {
      if (context.lastEndMs === null || !context.director.shouldWrite(context.lastEndMs)) return;
      const { deps, camera } = context;
      deps.index
        .putGap({ camera: camera.id, startMs: context.lastEndMs, endMs: null, state: 'open', reason: context.lastError ?? 'camera offline', attempts: 0 })
        .catch((err: Error) => deps.log.error({ camera: camera.id, err }, 'could not store gap'));
    },
    noteExit: assign(({ context, event }) => {
      if (event.type !== 'INGEST.EXITED') return {};
      context.deps.log.warn({ camera: context.camera.id, error: event.error, retryInMs: context.backoffMs }, 'ingest ended');
      return { lastError: event.error, lastEndMs: event.lastEndMs ?? context.lastEndMs };
    }),
    noteRecording: assign(({ context, event }) => {
      if (event.type !== 'INGEST.RECORDING') return {};
      return { backoffMs: context.deps.config.backoffInitialMs, lastError: null, media: event.media ?? null };
    }),
    doubleBackoff: assign(({ context }) => ({ backoffMs: Math.min(context.backoffMs * 2, context.deps.config.backoffMaxMs) })),
    persistDirector: ({ context }) => {
      const { deps, camera, director } = context;
      if (camera.transient) return;
      deps.index.recording.put(camera.id, director.snapshot()).catch((err: Error) => deps.log.error({ camera: camera.id, err }, 'could not persist events'));
    },
    alarmOffline: ({ context, event }) => {
      if (event.type !== 'INGEST.EXITED') return;
      context.deps.raiseAlarm({ kind: 'camera-offline', camera: context.camera.id, message: `camera ${context.camera.id} stopped sending video: ${event.error}` });
    },
    /**
     * The pool filled up (or has room again): writing holds or resumes. The hole is a
     * gap like any other (reason: the pool), stored when it starts and closed when
     * writing may resume, so search shows it and back-fill can try to fill it.
     */
    storage: assign(({ context, event }) => {
      if (event.type !== 'STORAGE') return {};
      const { deps, camera, director } = context;
      const now = deps.clock.nowMs();
      const wasBlocked = director.blockedBy !== null;
      director.setStorageBlocked(event.blocked);
      const putGap = (endMs: number | null, startMs: number): void =>
        void deps.index
          .putGap({ camera: camera.id, startMs, endMs, state: endMs === null ? 'open' : 'pending', reason: event.blocked ?? 'pool full', attempts: 0 })
          .catch((err: Error) => deps.log.error({ camera: camera.id, err }, 'could not store gap'));
      if (event.blocked !== null && !wasBlocked && director.planned(now).write) {
        putGap(null, now);
        return { storageGapStartMs: now };
      }
      if (event.blocked === null && context.storageGapStartMs !== null) {
        putGap(now, context.storageGapStartMs);
        return { storageGapStartMs: null };
      }
      return {};
    }),
    reconfigure: assign(({ event }) => (event.type === 'RECONFIGURE' ? { camera: event.camera } : {})),
    want: assign(({ event }) => ({ wantActive: event.type === 'START' })),
  },
}).createMachine({
  id: 'camera',
  context: ({ input }) => {
    const director = new RecordingDirector(input.plan);
    const saved = input.deps.index.recording.get(input.camera.id);
    if (saved) director.restore(saved);
    return {
      camera: input.camera,
      deps: input.deps,
      backoffMs: input.deps.config.backoffInitialMs,
      // What the index accounts for (video or a gap record, e.g. the recorder-down gap
      // the back-fill manager recorded at start): a new gap starts after it.
      lastEndMs: accountedUntilMs(input.deps.index, input.camera.id),
      lastError: null,
      wantActive: director.wantsIngest(input.deps.clock.nowMs()),
      director,
      stream: input.camera.record.stream,
      storageGapStartMs: null,
      media: null,
    };
  },
  initial: 'init',
  on: {
    RECONFIGURE: { target: '.init', actions: 'reconfigure', reenter: true },
    // A plan slot asks for the other stream: a new ingest attempt on it (new segment).
    SWITCH_STREAM: { target: '.init', reenter: true },
    PLAN: { actions: ({ context, event }) => context.director.setPlan(event.plan) },
    EVENT: { actions: [({ context, event }) => void context.director.applyEvent(event.event), 'persistDirector'] },
    MANUAL: { actions: [({ context, event }) => context.director.setManual(event.on), 'persistDirector'] },
    STORAGE: { actions: 'storage' },
  },
  states: {
    init: {
      always: [{ guard: 'wantActive', target: 'active' }, { target: 'stopped' }],
    },
    stopped: {
      entry: ({ context }) => publishState(context, 'stopped'),
      on: { START: { target: 'active', actions: 'want' } },
    },
    active: {
      entry: assign(({ context }) => {
        const wanted = context.director.streamAt(context.deps.clock.nowMs(), context.camera.record.stream);
        return { stream: context.camera.streams[wanted] ? wanted : 'main' };
      }),
      invoke: {
        src: 'ingest',
        input: ({ context }) => ({ camera: context.camera, deps: context.deps, lastEndMs: context.lastEndMs, director: context.director, stream: context.stream }),
        // The attempt threw while starting (an index read, a spawn): like ffmpeg dying.
        onError: {
          target: 'backoff',
          actions: assign(({ context, event }) => {
            const message = event.error instanceof Error ? event.error.message : String(event.error);
            context.deps.log.error({ camera: context.camera.id, err: event.error, retryInMs: context.backoffMs }, 'ingest attempt failed to start');
            return { lastError: `ingest attempt failed to start: ${message}` };
          }),
        },
      },
      initial: 'connecting',
      states: {
        connecting: {
          entry: ({ context }) => publishState(context, 'connecting'),
          on: { 'INGEST.RECORDING': { target: 'recording', actions: ['closeGap', 'noteRecording'] } },
        },
        recording: {
          entry: ({ context }) => {
            faultPoint('camera.recording', context.camera.id);
            publishState(context, 'recording');
          },
          // Raised once per outage: later failed attempts only back off.
          on: { 'INGEST.EXITED': { target: '#camera.backoff', actions: ['noteExit', 'openGap', 'alarmOffline'] } },
        },
      },
      on: {
        'INGEST.EXITED': { target: 'backoff', actions: ['noteExit', 'openGap'] },
        STOP: { target: 'stopped', actions: 'want' },
      },
    },
    backoff: {
      entry: ({ context }) => publishState(context, 'backoff', `${context.lastError ?? 'ingest failed'}; retry in ${context.backoffMs} ms`),
      after: { backoff: { target: 'active', actions: 'doubleBackoff' } },
      on: { STOP: { target: 'stopped', actions: 'want' } },
    },
  },
});

function publishState(context: CameraContext, state: CameraStateName, detail?: string): void {
  // Audio and transport are facts of a running recording: said only with `recording`.
  const media = state === 'recording' && context.media ? { audio: context.media.audio, transportInUse: context.media.transportInUse } : {};
  context.deps.publishStatus({
    camera: context.camera.id,
    state,
    at: iso(context.deps.clock.nowMs()),
    ...(detail !== undefined ? { detail } : {}),
    ...media,
  });
}

export function stateName(value: unknown): CameraStateName {
  if (value === 'stopped' || value === 'backoff') return value;
  if (typeof value === 'object' && value !== null && 'active' in value) {
    return (value as { active: string }).active === 'recording' ? 'recording' : 'connecting';
  }
  return 'stopped';
}
