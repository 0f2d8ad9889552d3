/**
 * Alarms (docs/api/nats.md `rec.v1.alarm.<kind>`): logged once when raised and published on
 * NATS. An alarm stays queued until the sink confirms it reached the server (the NATS
 * sink publishes, then flushes: a PING answered after the publishes): raised before
 * NATS is attached (start-up reconcile runs first), while NATS is down or the embedded
 * nats-server restarts, they wait in a bounded buffer (the oldest dropped past 1000)
 * and go out in order once it is back. Delivery is at least once: an alarm whose
 * confirmation was lost with the connection is sent again. Raising never blocks or
 * throws, whatever NATS is doing.
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
export type AlarmKind =
  | 'camera-offline'
  | 'camera-fault'
  | 'index'
  | 'write-error'
  | 'disk-near-full'
  | 'cpu-high'
  | 'memory-high'
  | 'backfill-failed'
  | 'disk-full'
  | 'pool-full'
  | 'backup-failed'
  | 'object-corrupt'
  | 'node-left'
  | 'cluster-unavailable'
  | 'copies-behind'
  | 'backup-behind'
  | 'object-log-reset'
  | 'bucket-name-taken';

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
/** Alarms sent per confirmation. */
const BATCH = 100;
/** A failed delivery is retried after 1 s doubling to 30 s, or at once on wake() (NATS reconnected). */
const RETRY_INITIAL_MS = 1000;
const RETRY_MAX_MS = 30_000;

/** Delivers alarms in order; resolves once they reached NATS, rejects if that is not known. */
export type AlarmSink = (alarms: Alarm[]) => Promise<void>;

export class AlarmBus {
  private sink: AlarmSink | null = null;
  /** Raised and not yet confirmed delivered, oldest first. */
  private readonly pending: Alarm[] = [];
  private dropped = 0;
  private sending = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_INITIAL_MS;
  private readonly observers: ((alarm: Alarm) => void)[] = [];

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  raise(input: AlarmInput): void {
    const alarm: Alarm = { ...input, at: iso(this.clock.nowMs()) };
    this.log.warn({ alarm: alarm.kind, camera: alarm.camera, details: alarm.details }, alarm.message);
    for (const o of this.observers) o(alarm);
    if (this.pending.length >= BUFFER_LIMIT) {
      this.pending.shift();
      this.dropped++;
    }
    this.pending.push(alarm);
    this.pump();
  }

  /** Sees every alarm as it is raised (metrics count them); must not throw. */
  observe(observer: (alarm: Alarm) => void): void {
    this.observers.push(observer);
  }

  /** Connects the publisher and sends what waited for it. */
  attach(sink: AlarmSink): void {
    this.sink = sink;
    this.wake();
  }

  /** Holds alarms from now on (shutdown); attach() again to deliver them. */
  detach(): void {
    this.sink = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Retries a failed delivery now (the NATS client has just reconnected). */
  wake(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryMs = RETRY_INITIAL_MS;
    this.pump();
  }

  /** Alarms waiting for delivery. */
  queued(): number {
    return this.pending.length;
  }

  private pump(): void {
    const sink = this.sink;
    if (!sink || this.sending || this.retryTimer || this.pending.length === 0) return;
    this.sending = true;
    const batch = this.pending.slice(0, BATCH);
    const sent = new Set(batch);
    let delivery: Promise<void>;
    try {
      delivery = sink(batch);
    } catch (err) {
      delivery = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    delivery.then(
      () => {
        this.sending = false;
        // Those of the batch still at the head (the bound may have dropped some meanwhile).
        while (this.pending.length > 0 && sent.has(this.pending[0]!)) this.pending.shift();
        if (this.dropped > 0) {
          this.log.warn({ dropped: this.dropped }, 'alarms dropped while NATS was unreachable (buffer full)');
          this.dropped = 0;
        }
        this.retryMs = RETRY_INITIAL_MS;
        this.pump();
      },
      (err: unknown) => {
        this.sending = false;
        if (!this.sink) return;
        this.log.debug({ err, queued: this.pending.length, retryInMs: this.retryMs }, 'alarms not delivered yet; kept');
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.pump();
        }, this.retryMs);
        this.retryTimer.unref();
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      },
    );
  }
}
