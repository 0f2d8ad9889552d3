/**
 * Alarms (CONTRACT.md `rec.v1.alarm.<kind>`): logged once when raised and published on
 * NATS. Raised before NATS is attached (start-up reconcile runs first), they wait in a
 * bounded buffer; raising never blocks or throws, whatever NATS is doing.
 */
import type { Logger } from './log.ts';
import { iso, type Clock } from './time.ts';

/**
 * `camera-offline`, `write-error`, `index`: raised by the camera actors and reconcile;
 * `disk-near-full`, `cpu-high`, `memory-high`: by ops/health-sampler.ts;
 * `backfill-failed`: by the back-fill jobs when a gap cannot be fetched;
 * `camera-fault`: by the supervisor when a camera's actor failed with an error of ours
 * (the camera is restarted; every other camera goes on).
 */
export type AlarmKind = 'camera-offline' | 'camera-fault' | 'index' | 'write-error' | 'disk-near-full' | 'cpu-high' | 'memory-high' | 'backfill-failed' | 'disk-full' | 'pool-full' | 'backup-failed';

export interface Alarm {
  kind: AlarmKind;
  camera?: string;
  pool?: string;
  at: string;
  message: string;
  details?: Record<string, unknown>;
}

export type AlarmInput = Omit<Alarm, 'at'>;

const BUFFER_LIMIT = 1000;

export class AlarmBus {
  private sink: ((alarm: Alarm) => void) | null = null;
  private readonly pending: Alarm[] = [];
  private dropped = 0;
  private readonly observers: ((alarm: Alarm) => void)[] = [];

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  raise(input: AlarmInput): void {
    const alarm: Alarm = { ...input, at: iso(this.clock.nowMs()) };
    this.log.warn({ alarm: alarm.kind, camera: alarm.camera, details: alarm.details }, alarm.message);
    for (const o of this.observers) o(alarm);
    if (this.sink) return this.sink(alarm);
    if (this.pending.length >= BUFFER_LIMIT) {
      this.pending.shift();
      this.dropped++;
    }
    this.pending.push(alarm);
  }

  /** Sees every alarm as it is raised (metrics count them); must not throw. */
  observe(observer: (alarm: Alarm) => void): void {
    this.observers.push(observer);
  }

  /** Connects the publisher and flushes what waited for it. */
  attach(sink: (alarm: Alarm) => void): void {
    this.sink = sink;
    for (const alarm of this.pending.splice(0)) sink(alarm);
    if (this.dropped > 0) this.log.warn({ dropped: this.dropped }, 'alarms dropped before NATS was reachable');
  }
}
