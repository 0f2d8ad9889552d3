/**
 * What a camera records at an instant, and as what: the plan (timing / event slots),
 * the events (they outrank timing and give what follows their record type), manual
 * recording, and a pool that refuses writes. Pure: the state is plain data (held in
 * the camera actor's context and handed to its ingest attempt by event), every
 * function takes the time it asks about.
 *
 * In event slots nothing is written until an event; the writer keeps `preSeconds` of
 * GOPs in memory meanwhile and writes them first when an event comes (pre-record).
 */
import type { SchedulePlan } from '../index/records.ts';
import { plannedAt, plannedStream } from './plan.ts';
import { activeEvent, prunedEvents, withEvent, type CameraEvent, type EventRuns } from './events.ts';

/** What survives a restart (index db `recording`): live events and manual recording. */
export interface DirectorState {
  events: EventRuns;
  manual: boolean;
}

export interface RecordingState extends DirectorState {
  plan: SchedulePlan | undefined;
  /** Why the camera's pool refuses writes (full), or null. */
  blocked: string | null;
}

export interface RecordDecision {
  write: boolean;
  type: string;
  /** Pre-record to keep in memory while not writing (0: none). */
  preMs: number;
  /**
   * For a write an event causes: when its run started. The pre-record held until then
   * is cut to begin at the last GOP that starts `preSeconds` before this instant, so
   * the clip covers the time before the event, not before the fragment that followed it.
   */
  sinceMs?: number;
}

/** Runs that ended this long before an event are forgotten when it arrives. */
const EVENT_MEMORY_MS = 3600_000;

export function recordingState(plan: SchedulePlan | undefined, saved?: DirectorState): RecordingState {
  return { plan, events: { ...(saved?.events ?? {}) }, manual: saved?.manual ?? false, blocked: null };
}

/** The part that is persisted. */
export function directorState(s: RecordingState): DirectorState {
  return { events: s.events, manual: s.manual };
}

const postMs = (s: RecordingState): number => (s.plan?.postSeconds ?? 0) * 1000;

/** `s` with the event merged in (and runs long over forgotten). */
export function withCameraEvent(s: RecordingState, e: CameraEvent): RecordingState {
  return { ...s, events: prunedEvents(withEvent(s.events, e, postMs(s)), e.atMs - EVENT_MEMORY_MS, postMs(s)) };
}

/** Whether an event at `atMs` is recorded: a slot or manual recording is on then. */
export function eventRecorded(s: RecordingState, atMs: number): boolean {
  return s.manual || plannedAt(s.plan, atMs) !== null;
}

/** What is written at `ms`: a full pool holds writing whatever the plan says (ingest keeps running so it resumes at once). */
export function decide(s: RecordingState, ms: number): RecordDecision {
  if (s.blocked !== null) return { write: false, type: 'blocked', preMs: 0 };
  return planned(s, ms);
}

/** What the plan, events and manual flag say, whatever the storage. */
export function planned(s: RecordingState, ms: number): RecordDecision {
  const slot = plannedAt(s.plan, ms);
  const event = slot !== null || s.manual ? activeEvent(s.events, ms, postMs(s)) : null;
  if (event) return { write: true, type: event.type, preMs: 0, sinceMs: event.startedMs };
  if (s.manual) return { write: true, type: 'manual', preMs: 0 };
  if (slot === 'timing') return { write: true, type: 'timing', preMs: 0 };
  if (slot === 'event') return { write: false, type: 'event', preMs: (s.plan?.preSeconds ?? 0) * 1000 };
  return { write: false, type: 'none', preMs: 0 };
}

/** Whether ingest must run at `ms`: a slot or manual recording (events count only inside those). */
export function wantsIngest(s: RecordingState, ms: number): boolean {
  return eventRecorded(s, ms);
}

/** The stream to ingest at `ms`: the slot's, else the camera's default. */
export function streamAt(s: RecordingState, ms: number, fallback: 'main' | 'sub'): 'main' | 'sub' {
  return plannedStream(s.plan, ms) ?? fallback;
}

/** Whether video at `ms` should have been written (for gap records). */
export function shouldWrite(s: RecordingState, ms: number): boolean {
  return decide(s, ms).write;
}
