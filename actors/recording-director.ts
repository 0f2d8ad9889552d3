/**
 * Decides, per fragment, whether a camera's video is written and with which record
 * type: the plan (timing / event slots), the events (they outrank timing and change
 * the record type of what follows), and manual recording. In event slots nothing is
 * written until an event; the writer keeps `preSeconds` of GOPs in memory meanwhile
 * and writes them first when an event comes (pre-record). Owned by the camera actor;
 * its ingest child asks it about each fragment.
 */
import type { SchedulePlan } from '../index/records.ts';
import { plannedAt, plannedStream } from '../schedule/plan.ts';
import { EventTracker, type CameraEvent, type TypeState } from '../schedule/events.ts';

/** What survives a restart: live events and manual recording. */
export interface DirectorState {
  events: Record<string, TypeState>;
  manual: boolean;
}

export interface RecordDecision {
  write: boolean;
  type: string;
  /** Pre-record to keep in memory while not writing (0: none). */
  preMs: number;
}

export class RecordingDirector {
  private readonly events: EventTracker;
  private manual = false;
  /** Why the camera's pool refuses writes (full), or null. */
  private storageBlocked: string | null = null;

  constructor(private plan: SchedulePlan | undefined) {
    this.events = new EventTracker((plan?.postSeconds ?? 0) * 1000);
  }

  snapshot(): DirectorState {
    return { events: this.events.snapshot(), manual: this.manual };
  }

  restore(state: DirectorState): void {
    this.events.restore(state.events);
    this.manual = state.manual;
  }

  setPlan(plan: SchedulePlan | undefined): void {
    this.plan = plan;
    this.events.setPostSeconds(plan?.postSeconds ?? 0);
  }

  setManual(on: boolean): void {
    this.manual = on;
  }

  setStorageBlocked(reason: string | null): void {
    this.storageBlocked = reason;
  }

  get blockedBy(): string | null {
    return this.storageBlocked;
  }

  get manualOn(): boolean {
    return this.manual;
  }

  /** Applies an event; returns whether it leads to recording now (a slot or manual is on). */
  applyEvent(e: CameraEvent): boolean {
    this.events.apply(e);
    this.events.prune(e.atMs - 3600_000);
    return this.manual || plannedAt(this.plan, e.atMs) !== null;
  }

  /** A full pool holds writing whatever the plan says; ingest keeps running so it resumes at once. */
  decide(ms: number): RecordDecision {
    if (this.storageBlocked !== null) return { write: false, type: 'blocked', preMs: 0 };
    return this.planned(ms);
  }

  /** What the plan, events and manual flag say, whatever the storage. */
  planned(ms: number): RecordDecision {
    const planned = plannedAt(this.plan, ms);
    const event = planned !== null || this.manual ? this.events.activeType(ms) : null;
    if (event) return { write: true, type: event, preMs: 0 };
    if (this.manual) return { write: true, type: 'manual', preMs: 0 };
    if (planned === 'timing') return { write: true, type: 'timing', preMs: 0 };
    if (planned === 'event') return { write: false, type: 'event', preMs: (this.plan?.preSeconds ?? 0) * 1000 };
    return { write: false, type: 'none', preMs: 0 };
  }

  /** Whether ingest must run at `ms`: a slot, manual recording or a live event. */
  wantsIngest(ms: number): boolean {
    return this.manual || plannedAt(this.plan, ms) !== null;
  }

  /** The stream to ingest at `ms`: the slot's, else the camera's default. */
  streamAt(ms: number, fallback: 'main' | 'sub'): 'main' | 'sub' {
    return plannedStream(this.plan, ms) ?? fallback;
  }

  /** Whether video at `ms` should have been written (for gap records). */
  shouldWrite(ms: number): boolean {
    return this.decide(ms).write;
  }
}
