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

export class EventTracker {
  private readonly types = new Map<string, TypeState>();

  constructor(private postMs: number) {}

  /** Plain data to persist, so an event survives a restart. */
  snapshot(): Record<string, TypeState> {
    return Object.fromEntries(this.types);
  }

  restore(state: Record<string, TypeState>): void {
    this.types.clear();
    for (const [type, s] of Object.entries(state)) this.types.set(type, { ...s });
  }

  setPostSeconds(seconds: number): void {
    this.postMs = seconds * 1000;
  }

  apply(e: CameraEvent): void {
    const s = this.types.get(e.type);
    const live = s !== undefined && (s.open || e.atMs <= s.endMs + this.postMs);
    if (e.action === 'start') {
      this.types.set(e.type, { startedMs: live ? Math.min(s.startedMs, e.atMs) : e.atMs, open: true, endMs: e.atMs });
    } else if (e.action === 'stop') {
      if (s) this.types.set(e.type, { ...s, open: false, endMs: Math.max(e.atMs, s.open ? e.atMs : s.endMs) });
    } else {
      const end = e.atMs + (e.seconds ?? 1) * 1000;
      if (live) this.types.set(e.type, { startedMs: Math.min(s.startedMs, e.atMs), open: s.open, endMs: Math.max(s.endMs, end) });
      else this.types.set(e.type, { startedMs: e.atMs, open: false, endMs: end });
    }
  }

  /** The type of the most recently started event active at `ms`, or null. */
  activeType(ms: number): string | null {
    let best: { type: string; startedMs: number } | null = null;
    for (const [type, s] of this.types) {
      const active = s.startedMs <= ms && (s.open || ms < s.endMs + this.postMs);
      if (active && (!best || s.startedMs > best.startedMs)) best = { type, startedMs: s.startedMs };
    }
    return best?.type ?? null;
  }

  /** Forgets runs that ended (with post-record) before `ms`. */
  prune(ms: number): void {
    for (const [type, s] of this.types) if (!s.open && s.endMs + this.postMs < ms) this.types.delete(type);
  }
}
