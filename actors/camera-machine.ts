/**
 * The camera actor: one per camera, owns its ingest attempts and its gap tracking.
 * Two regions run side by side:
 *
 *   ingest:   stopped ──(plan, manual want ingest)──► active.connecting ──INGEST.RECORDING──► active.recording
 *                ▲                                     ▲      │ INGEST.EXITED (camera gone, ffmpeg died, write error)
 *                └──(nothing wanted)── any ──          │      ▼
 *                                                      └── backoff (1 s doubling to 30 s; reset once recording)
 *             STOP from any state → halted (final: kills ffmpeg; the open segment is closed).
 *   schedule: waiting ──after the plan's next change──► waiting (reads the clock; the ingest
 *             region's guards then start, stop or switch the stream)
 *
 * Data only in the context: the camera, the recording state (plan, events, manual,
 * blocked pool: schedule/recording.ts), the time as last read, backoff, gaps. The
 * ingest attempt gets the recording state as input and every change of it by event
 * (`RECORDING`). What touches the world is injected with `.provide()` (provideCamera):
 * the clock (`readClock`), the gap and recording stores, and the ingest actor. Status,
 * alarms and the end of each attempt go out as emitted events (`status`, `alarm`,
 * `ingest.ended`); the owner (actors/supervisor.ts) publishes and logs them.
 *
 * An attempt that throws while starting goes to backoff as a failed attempt does; an
 * error thrown by this machine itself is contained by the supervisor.
 *
 * Gaps: when an attempt fails after video was written, an open gap is stored at the
 * end of the last fragment; when video flows again, the gap is closed at the new
 * segment's start. The same rule covers a recorder that was down: what the index
 * accounted for at the start (input `accountedUntilMs`) is where the gap starts.
 */
import { assign, emit, enqueueActions, fromCallback, not, sendTo, setup, type CallbackActorLogic } from 'xstate';
import { faultPoint } from '../lib/crash-point.ts';
import type { Clock } from '../lib/time.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { CameraConfig, GapRecord, SchedulePlan } from '../index/records.ts';
import type { CameraEvent } from '../schedule/events.ts';
import { nextPlanChangeMs } from '../schedule/plan.ts';
import {
  directorState,
  planned,
  recordingState,
  shouldWrite,
  streamAt,
  wantsIngest,
  withCameraEvent,
  type DirectorState,
  type RecordingState,
} from '../schedule/recording.ts';
import type { CameraStateName, IngestMedia } from './deps.ts';

/** Video further apart than this across ingest attempts is recorded as a gap. */
export const GAP_MIN_MS = 1000;
/**
 * The schedule region wakes at least this often even when the plan's next change is
 * further off: a wall-clock step (NTP) then moves a slot boundary by at most this much.
 */
export const PLAN_WAKE_MAX_MS = 60_000;

export interface CameraInput {
  camera: CameraConfig;
  plan: SchedulePlan | undefined;
  /** Events and manual recording as persisted before a restart. */
  saved?: DirectorState | undefined;
  /** Where the index accounts for this camera until (video or a gap record), if anywhere. */
  accountedUntilMs: number | null;
  backoff: { initialMs: number; maxMs: number };
}

export interface CameraContext {
  camera: CameraConfig;
  /** What is written, as what: plan, events, manual, blocked pool (shared with ingest by event). */
  recording: RecordingState;
  /** The node's clock as last read (readClock): the plan is judged at this time. */
  nowMs: number;
  backoff: { initialMs: number; maxMs: number };
  backoffMs: number;
  lastEndMs: number | null;
  lastError: string | null;
  /** The stream the running ingest pulls. */
  stream: 'main' | 'sub';
  /** Start of the gap a full pool is causing, while it lasts. */
  storageGapStartMs: number | null;
  /** What the recording attempt does with audio and which transport it uses (status). */
  media: IngestMedia | null;
}

/** What an ingest attempt is given. */
export interface IngestInput {
  camera: CameraConfig;
  stream: 'main' | 'sub';
  lastEndMs: number | null;
  recording: RecordingState;
}

/** What an ingest attempt tells its camera. */
export type IngestEvent =
  | { type: 'INGEST.RECORDING'; startMs: number; media?: IngestMedia }
  /** What a recording attempt stores changed midway (a new init: its audio encoder failed). */
  | { type: 'INGEST.MEDIA'; media: IngestMedia }
  | { type: 'INGEST.EXITED'; error: string; lastEndMs: number | null };

/** What the camera tells its running attempt: the recording state changed. */
export type IngestCommand = { type: 'RECORDING'; recording: RecordingState };

/** The ingest attempt's logic: a callback actor (one attempt; its cleanup ends it). */
export type IngestLogic = CallbackActorLogic<IngestCommand, IngestInput>;

export type CameraMachineEvent =
  | { type: 'STOP' }
  | { type: 'RECONFIGURE'; camera: CameraConfig }
  | { type: 'PLAN'; plan: SchedulePlan | undefined }
  | { type: 'EVENT'; event: CameraEvent }
  | { type: 'MANUAL'; on: boolean }
  | { type: 'STORAGE'; blocked: string | null }
  | IngestEvent;

export type CameraEmitted =
  /** A state entered (the owner adds camera and time and publishes it). */
  | { type: 'status'; state: CameraStateName; detail?: string; media?: IngestMedia }
  | { type: 'alarm'; alarm: AlarmInput }
  /** An attempt ended (`cause`: what it threw when it failed to start); backoff follows. */
  | { type: 'ingest.ended'; error: string; retryInMs: number; cause?: unknown };

/** What the camera machine needs from the node (provideCamera). */
export interface CameraPorts {
  clock: Clock;
  /** Stores a gap record; must not throw (a failed write is the store's to log). */
  storeGap: (gap: GapRecord) => void;
  /** Persists a camera's events and manual flag; must not throw. */
  storeRecording: (camera: string, state: DirectorState) => void;
  ingest: IngestLogic;
}

const notProvided = (what: string) => (): never => {
  throw new Error(`camera machine: ${what} not provided (provideCamera)`);
};
/** A parameterized action the owner provides (its params typed here). */
const injected =
  <P>(what: string) =>
  (_: unknown, params: P): void => {
    throw new Error(`camera machine: ${what} not provided, called with ${JSON.stringify(params)}`);
  };

export const cameraMachine = setup({
  types: {
    context: {} as CameraContext,
    events: {} as CameraMachineEvent,
    input: {} as CameraInput,
    emitted: {} as CameraEmitted,
  },
  actors: {
    ingest: fromCallback<IngestCommand, IngestInput>(notProvided('ingest')),
  },
  delays: {
    backoff: ({ context }) => context.backoffMs,
    planChange: ({ context }) => {
      const next = nextPlanChangeMs(context.recording.plan, context.nowMs);
      return next === null ? PLAN_WAKE_MAX_MS : Math.min(PLAN_WAKE_MAX_MS, Math.max(0, next - context.nowMs));
    },
  },
  guards: {
    wantsIngest: ({ context }) => wantsIngest(context.recording, context.nowMs),
    /** The plan asks for the other stream now, and the camera has it. */
    otherStream: ({ context }) => {
      const wanted = streamAt(context.recording, context.nowMs, context.camera.record.stream);
      return wanted !== context.stream && context.camera.streams[wanted] !== undefined;
    },
  },
  actions: {
    /** Injected: sets `nowMs` from the node's clock. */
    readClock: notProvided('readClock'),
    /** Injected: stores a gap record. */
    storeGap: injected<GapRecord>('storeGap'),
    /** Injected: persists events and manual recording. */
    storeRecording: injected<{ camera: string; state: DirectorState }>('storeRecording'),
    persistRecording: enqueueActions(({ context, enqueue }) => {
      if (context.camera.transient) return;
      enqueue({ type: 'storeRecording', params: { camera: context.camera.id, state: directorState(context.recording) } });
    }),
    /** The running attempt decides per fragment from the recording state: it gets every change. */
    syncIngest: sendTo('ingest', ({ context }) => ({ type: 'RECORDING', recording: context.recording }) satisfies IngestCommand),
    setPlan: assign(({ context, event }) => (event.type === 'PLAN' ? { recording: { ...context.recording, plan: event.plan } } : {})),
    applyEvent: assign(({ context, event }) => (event.type === 'EVENT' ? { recording: withCameraEvent(context.recording, event.event) } : {})),
    setManual: assign(({ context, event }) => (event.type === 'MANUAL' ? { recording: { ...context.recording, manual: event.on } } : {})),
    reconfigure: assign(({ event }) => (event.type === 'RECONFIGURE' ? { camera: event.camera } : {})),
    chooseStream: assign(({ context }) => {
      const wanted = streamAt(context.recording, context.nowMs, context.camera.record.stream);
      return { stream: context.camera.streams[wanted] ? wanted : 'main' };
    }),
    closeGap: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'INGEST.RECORDING' || context.lastEndMs === null) return;
      if (event.startMs - context.lastEndMs < GAP_MIN_MS) return;
      if (!shouldWrite(context.recording, context.lastEndMs)) return; // nothing was due then
      const gap: GapRecord = {
        camera: context.camera.id,
        startMs: context.lastEndMs,
        endMs: event.startMs,
        state: 'pending',
        reason: context.lastError ?? 'recorder was not running',
        attempts: 0,
      };
      enqueue({ type: 'storeGap', params: gap });
    }),
    openGap: enqueueActions(({ context, enqueue }) => {
      if (context.lastEndMs === null || !shouldWrite(context.recording, context.lastEndMs)) return;
      const gap: GapRecord = {
        camera: context.camera.id,
        startMs: context.lastEndMs,
        endMs: null,
        state: 'open',
        reason: context.lastError ?? 'camera offline',
        attempts: 0,
      };
      enqueue({ type: 'storeGap', params: gap });
    }),
    noteExit: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'INGEST.EXITED') return;
      enqueue.assign({ lastError: event.error, lastEndMs: event.lastEndMs ?? context.lastEndMs });
      enqueue.emit({ type: 'ingest.ended', error: event.error, retryInMs: context.backoffMs });
    }),
    noteStartFailure: enqueueActions(({ context, event, enqueue }) => {
      const error = (event as { error?: unknown }).error;
      const message = error instanceof Error ? error.message : String(error);
      enqueue.assign({ lastError: `ingest attempt failed to start: ${message}` });
      enqueue.emit({ type: 'ingest.ended', error: `ingest attempt failed to start: ${message}`, retryInMs: context.backoffMs, cause: error });
    }),
    noteRecording: assign(({ context, event }) => {
      if (event.type !== 'INGEST.RECORDING') return {};
      return { backoffMs: context.backoff.initialMs, lastError: null, media: event.media ?? null };
    }),
    noteMedia: assign(({ event }) => (event.type === 'INGEST.MEDIA' ? { media: event.media } : {})),
    doubleBackoff: assign(({ context }) => ({ backoffMs: Math.min(context.backoffMs * 2, context.backoff.maxMs) })),
    /** Raised once per outage: later failed attempts only back off. */
    alarmOffline: emit(({ context, event }) => ({
      type: 'alarm' as const,
      alarm: {
        kind: 'camera-offline',
        camera: context.camera.id,
        message: `camera ${context.camera.id} stopped sending video: ${event.type === 'INGEST.EXITED' ? event.error : 'ingest ended'}`,
      },
    })),
    /**
     * The pool filled up (or has room again): writing holds or resumes. The hole is a
     * gap like any other (reason: the pool), stored when it starts and closed when
     * writing may resume, so search shows it and back-fill can try to fill it.
     */
    storage: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'STORAGE') return;
      const { camera, nowMs } = context;
      const wasBlocked = context.recording.blocked !== null;
      const recording = { ...context.recording, blocked: event.blocked };
      const gap = (startMs: number, endMs: number | null): GapRecord => ({
        camera: camera.id,
        startMs,
        endMs,
        state: endMs === null ? 'open' : 'pending',
        reason: event.blocked ?? 'pool full',
        attempts: 0,
      });
      if (event.blocked !== null && !wasBlocked && planned(recording, nowMs).write) {
        enqueue({ type: 'storeGap', params: gap(nowMs, null) });
        enqueue.assign({ recording, storageGapStartMs: nowMs });
      } else if (event.blocked === null && context.storageGapStartMs !== null) {
        enqueue({ type: 'storeGap', params: gap(context.storageGapStartMs, nowMs) });
        enqueue.assign({ recording, storageGapStartMs: null });
      } else {
        enqueue.assign({ recording });
      }
    }),
    statusStopped: emit({ type: 'status' as const, state: 'stopped' as const }),
    statusConnecting: emit({ type: 'status' as const, state: 'connecting' as const }),
    // Audio and transport are facts of a running recording: said only with `recording`.
    statusRecording: emit(({ context }) => ({ type: 'status' as const, state: 'recording' as const, ...(context.media ? { media: context.media } : {}) })),
    statusBackoff: emit(({ context }) => ({
      type: 'status' as const,
      state: 'backoff' as const,
      detail: `${context.lastError ?? 'ingest failed'}; retry in ${context.backoffMs} ms`,
    })),
    /** A test hook (lib/crash-point.ts): throws here when asked to, as a bug in this machine would. */
    faultPointRecording: ({ context }) => faultPoint('camera.recording', context.camera.id),
  },
}).createMachine({
  id: 'camera',
  type: 'parallel',
  context: ({ input }) => ({
    camera: input.camera,
    recording: recordingState(input.plan, input.saved),
    nowMs: 0, // read at once (entry)
    backoff: input.backoff,
    backoffMs: input.backoff.initialMs,
    lastEndMs: input.accountedUntilMs,
    lastError: null,
    stream: input.camera.record.stream,
    storageGapStartMs: null,
    media: null,
  }),
  entry: 'readClock',
  states: {
    ingest: {
      initial: 'choosing',
      on: {
        RECONFIGURE: { target: '.choosing', actions: ['readClock', 'reconfigure'] },
        PLAN: { actions: ['readClock', 'setPlan'] },
        EVENT: { actions: ['readClock', 'applyEvent', 'persistRecording'] },
        MANUAL: { actions: ['readClock', 'setManual', 'persistRecording'] },
        STORAGE: { actions: ['readClock', 'storage'] },
        STOP: '.halted',
      },
      states: {
        choosing: {
          always: [{ guard: 'wantsIngest', target: 'active' }, { target: 'stopped' }],
        },
        stopped: {
          entry: 'statusStopped',
          always: { guard: 'wantsIngest', target: 'active' },
        },
        active: {
          entry: 'chooseStream',
          invoke: {
            id: 'ingest',
            src: 'ingest',
            input: ({ context }) => ({ camera: context.camera, stream: context.stream, lastEndMs: context.lastEndMs, recording: context.recording }),
            // The attempt threw while starting (an index read, a spawn): like ffmpeg dying.
            onError: { target: 'backoff', actions: 'noteStartFailure' },
          },
          // Nothing wanted any more (plan, manual), or a slot asks for the other stream (a new attempt, a new segment).
          always: [
            { guard: not('wantsIngest'), target: 'stopped' },
            { guard: 'otherStream', target: 'active', reenter: true },
          ],
          on: {
            PLAN: { actions: ['readClock', 'setPlan', 'syncIngest'] },
            EVENT: { actions: ['readClock', 'applyEvent', 'persistRecording', 'syncIngest'] },
            MANUAL: { actions: ['readClock', 'setManual', 'persistRecording', 'syncIngest'] },
            STORAGE: { actions: ['readClock', 'storage', 'syncIngest'] },
            'INGEST.EXITED': { target: 'backoff', actions: ['noteExit', 'openGap'] },
          },
          initial: 'connecting',
          states: {
            connecting: {
              entry: 'statusConnecting',
              on: { 'INGEST.RECORDING': { target: 'recording', actions: ['closeGap', 'noteRecording'] } },
            },
            recording: {
              entry: ['faultPointRecording', 'statusRecording'],
              on: {
                'INGEST.EXITED': { target: '#camera.ingest.backoff', actions: ['noteExit', 'openGap', 'alarmOffline'] },
                'INGEST.MEDIA': { actions: ['noteMedia', 'statusRecording'] },
              },
            },
          },
        },
        backoff: {
          entry: 'statusBackoff',
          always: { guard: not('wantsIngest'), target: 'stopped' },
          after: { backoff: { target: 'active', actions: ['readClock', 'doubleBackoff'] } },
        },
        halted: {
          type: 'final',
          entry: 'statusStopped',
        },
      },
    },
    schedule: {
      initial: 'waiting',
      states: {
        // Re-armed whenever the plan changes: the delay is computed from the plan's next change.
        waiting: {
          after: { planChange: { target: 'waiting', reenter: true, actions: 'readClock' } },
          on: { PLAN: { target: 'waiting', reenter: true } },
        },
      },
    },
  },
});

/** The camera machine with the node's implementations (tests inject fakes the same way). */
export function provideCamera(ports: CameraPorts) {
  return cameraMachine.provide({
    actions: {
      readClock: assign({ nowMs: () => ports.clock.nowMs() }),
      storeGap: (_, gap) => ports.storeGap(gap),
      storeRecording: (_, p) => ports.storeRecording(p.camera, p.state),
    },
    actors: { ingest: ports.ingest },
  });
}

/** The state the camera is in, as status names it (from a snapshot's value). */
export function stateName(value: unknown): CameraStateName {
  const ingest = typeof value === 'object' && value !== null ? (value as { ingest?: unknown }).ingest : undefined;
  if (ingest === 'backoff') return 'backoff';
  if (typeof ingest === 'object' && ingest !== null && 'active' in ingest) {
    return (ingest as { active: string }).active === 'recording' ? 'recording' : 'connecting';
  }
  return 'stopped';
}
