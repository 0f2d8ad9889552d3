/**
 * NVR-style events of one camera, merged per type (pure; times are passed in).
 * `start`/`stop` open and close an event, `pulse` is an event of `seconds`. Events of
 * one type that overlap merge into one; after the last one ends, recording goes on for
 * `postSeconds`. State is O(number of types), so a flood of events costs nothing
 * but the calls.
 */
export type EventAction = 'start' | 'stop' | 'pulse';

export interface CameraEvent {
  type: string;
  action: EventAction;
  atMs: number;
  seconds?: number;
}

export interface TypeState {
  /** Start of the current (merged) run of this type. */
  startedMs: number;
  /** An open start without stop. */
  open: boolean;
  /** End of the run before post-record (for closed runs). */
  endMs: number;
}

/** The event runs of one camera by type: plain data (persisted, held in actor context). */
export type EventRuns = Record<string, TypeState>;

/** `runs` with `e` merged in (a new object; `runs` is left as it was). */
export function withEvent(runs: EventRuns, e: CameraEvent, postMs: number): EventRuns {
  const s = runs[e.type];
  const live = s !== undefined && (s.open || e.atMs <= s.endMs + postMs);
  let next: TypeState | undefined;
  if (e.action === 'start') {
    next = { startedMs: live ? Math.min(s.startedMs, e.atMs) : e.atMs, open: true, endMs: e.atMs };
  } else if (e.action === 'stop') {
    if (s) next = { ...s, open: false, endMs: Math.max(e.atMs, s.open ? e.atMs : s.endMs) };
  } else {
    const end = e.atMs + (e.seconds ?? 1) * 1000;
    next = live ? { startedMs: Math.min(s.startedMs, e.atMs), open: s.open, endMs: Math.max(s.endMs, end) } : { startedMs: e.atMs, open: false, endMs: end };
  }
  return next ? { ...runs, [e.type]: next } : runs;
}

/** The most recently started event run active at `ms` (its type and start), or null. */
export function activeEvent(runs: EventRuns, ms: number, postMs: number): { type: string; startedMs: number } | null {
  let best: { type: string; startedMs: number } | null = null;
  for (const [type, s] of Object.entries(runs)) {
    const active = s.startedMs <= ms && (s.open || ms < s.endMs + postMs);
    if (active && (!best || s.startedMs > best.startedMs)) best = { type, startedMs: s.startedMs };
  }
  return best;
}

/** The type of the most recently started event active at `ms`, or null. */
export function activeEventType(runs: EventRuns, ms: number, postMs: number): string | null {
  return activeEvent(runs, ms, postMs)?.type ?? null;
}

/** `runs` without the runs that ended (with post-record) before `ms`. */
export function prunedEvents(runs: EventRuns, ms: number, postMs: number): EventRuns {
  return Object.fromEntries(Object.entries(runs).filter(([, s]) => s.open || s.endMs + postMs >= ms));
}

/** The same rules over a mutable holder (for callers that keep one tracker). */
export class EventTracker {
  private runs: EventRuns = {};

  constructor(private postMs: number) {}

  /** Plain data to persist, so an event survives a restart. */
  snapshot(): EventRuns {
    return { ...this.runs };
  }

  restore(state: EventRuns): void {
    this.runs = { ...state };
  }

  setPostSeconds(seconds: number): void {
    this.postMs = seconds * 1000;
  }

  apply(e: CameraEvent): void {
    this.runs = withEvent(this.runs, e, this.postMs);
  }

  activeType(ms: number): string | null {
    return activeEventType(this.runs, ms, this.postMs);
  }

  prune(ms: number): void {
    this.runs = prunedEvents(this.runs, ms, this.postMs);
  }
}
