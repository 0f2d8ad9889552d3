/**
 * The JetStream half of announce-and-pull, shared by segment copies (cluster/copies.ts)
 * and picture copies (cluster/picture-copies.ts): docs/design/cluster.md "Redundant
 * copies" and docs/design/pictures.md "Copies in a cluster". Each announces on a
 * replicated stream and reads it through a durable consumer of its own per node, by the
 * same rules:
 *
 * - Binding: the stream (limits, file storage, replicated as the KV buckets, announcements
 *   kept STREAM_MAX_AGE_MS) and this node's durable consumer are made when missing, tried
 *   again every second until JetStream answers. The consumer acknowledges explicitly
 *   (ack wait ACK_WAIT_MS) and, when first made, starts at what was published from
 *   CONSUMER_START_MARGIN_MS before this node's start: what the others announce to a
 *   joining node before its consumer exists still reaches it; a node that was down
 *   resumes where it was.
 * - Publishing: until the stream is bound, and when a publish fails (no quorum, an
 *   election), the announcement is kept in memory by its id (the latest per id, up to a
 *   bound) and published again by a later round (`republish`).
 * - Consuming: each round fetches a batch; a message that is not an announcement (not
 *   JSON, or any field missing or of the wrong type: the service's zod schema) is
 *   terminated and logged once, never redelivered; the service's `handle` acknowledges, terminates, or
 *   pulls through `work`: the server is told every 10 s that the pull is working, it is
 *   acknowledged when it ends, and one that fails is nak'ed with a delay of 2^n s
 *   (≤ MAX_RETRY_DELAY_MS) and redelivered (a source that died may come back); still
 *   failing after BEHIND_AFTER deliveries, `copies-behind` is raised (at most once per
 *   BEHIND_ALARM_EVERY_MS).
 *
 * What is announced, who pulls it and how stay with each service.
 */
import { AckPolicy, DeliverPolicy, nanos, RetentionPolicy, StorageType, type JsMsg, type NatsConnection } from 'nats';
import type { z } from 'zod';
import { sleepUnlessStopped } from '../lib/lifecycle.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';
import { validate } from '../lib/validate.ts';

/** Announcements older than this leave the stream: a node down longer misses them. */
const STREAM_MAX_AGE_MS = 7 * 24 * 3600_000;
export const JS_TIMEOUT_MS = 4000;
/** A pull not finished in this long is redelivered; `working()` extends it while it runs. */
const ACK_WAIT_MS = 60_000;
/** How far before this node's start a new consumer begins (other machines' clocks may be behind). */
const CONSUMER_START_MARGIN_MS = 60_000;
/** The longest a failed pull waits before it is tried again. */
const MAX_RETRY_DELAY_MS = 60_000;
/** A pull failing this many times in a row (about 30 s of retries) is behind: an alarm. */
const BEHIND_AFTER = 5;
const BEHIND_ALARM_EVERY_MS = 10 * 60_000;
/** Kept announcements published again per round at the most. */
const REPUBLISH_PER_ROUND = 500;

/** A durable consumer's name for a node (names may not hold '.', '*', '>' or spaces; node ids are host names). */
export function durableName(kind: string, nodeId: string): string {
  return `${kind}-${nodeId.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

export interface AnnouncementStreamOptions<A extends { source: string }> {
  /** How the service names itself in log lines (`copies`, `picture copies`). */
  what: string;
  stream: string;
  /** The stream's subjects (`<prefix>.copies.>`). */
  subjects: string;
  durable: string;
  replicas: number;
  /** One message kept per subject (the latest says all the earlier ones did); unset: no such limit. */
  maxMsgsPerSubject?: number;
  /** Announcements kept for a publish that failed, at the most. */
  maxUnpublished: number;
  /** Where an announcement is published. */
  subject: (a: A) => string;
  /** What a kept announcement is kept by (a later one of the same id replaces it). */
  id: (a: A) => string;
  /** The announcement in log lines. */
  describe: (a: A) => Record<string, unknown>;
  /** Every field of an announcement: a message that fails it is terminated and logged. */
  schema: z.ZodType<A>;
  /** Why a message that is not an announcement is terminated. */
  malformed: string;
  /** One fetch: at most `max` messages, waiting up to `expiresMs` for one. */
  batch: { max: number; expiresMs: number };
  /** The level of a failed round's log line. */
  roundFailureLevel: 'warn' | 'debug';
  /** More to bind besides the stream and the consumer (throws: not bound, tried again). */
  onBind?: (nc: NatsConnection) => Promise<void> | void;
  /** Each round's work before its fetch (announcing, `republish`). */
  beforeFetch: () => Promise<void>;
  /** One announcement: acknowledge, terminate, or pull through `work`. */
  handle: (a: A, m: JsMsg) => Promise<void>;
  /** The `copies-behind` alarm for an announcement whose pull failed `tries` times. */
  behindAlarm: (a: A, tries: number, err: Error, pending: number | null) => AlarmInput;
  log: Logger;
  raiseAlarm?: ((alarm: AlarmInput) => void) | undefined;
  /** The service's stop: ends the loop, a kept publish's retries and the sleeps. */
  signal: AbortSignal;
}

export class AnnouncementStream<A extends { source: string }> {
  private nc: NatsConnection | null = null;
  private bound = false;
  private done: Promise<void> = Promise.resolve();
  private readonly unpublished = new Map<string, A>();
  private pendingCount: number | null = null;
  private behindAlarmAt = -Infinity;
  /** When this stream was made (the node's start): a new consumer is delivered what was published since. */
  private readonly startedAt = Date.now();
  /** Pulls that failed, and the last one's error. */
  readonly failures = { failed: 0, lastError: null as string | null };

  constructor(private readonly o: AnnouncementStreamOptions<A>) {}

  /** Starts binding the stream and the consumer, then the rounds (in the background). */
  start(nc: NatsConnection): void {
    if (this.nc) return;
    this.nc = nc;
    this.done = this.loop();
  }

  /** Resolves when the loop has ended (after the signal aborts). */
  stopped(): Promise<void> {
    return this.done;
  }

  /** Announcements not yet handled by this node's consumer (null: not known yet). */
  get pending(): number | null {
    return this.pendingCount;
  }

  /** Announcements this node could not publish yet. */
  get unpublishedCount(): number {
    return this.unpublished.size;
  }

  /** Publishes one announcement; false: kept, published again by a later round. */
  async publish(a: A): Promise<boolean> {
    const id = this.o.id(a);
    if (!this.bound || !this.nc) {
      this.keep(id, a);
      return false;
    }
    try {
      await this.nc.jetstream({ timeout: JS_TIMEOUT_MS }).publish(this.o.subject(a), JSON.stringify(a));
      this.unpublished.delete(id);
      return true;
    } catch (err) {
      this.keep(id, a);
      this.o.log.debug({ ...this.o.describe(a), err: (err as Error).message }, `${this.o.what}: announcement not published; kept for the next round`);
      return false;
    }
  }

  /** Publishes again (some of) what was kept. */
  async republish(): Promise<void> {
    for (const a of [...this.unpublished.values()].slice(0, REPUBLISH_PER_ROUND)) {
      if (this.o.signal.aborted) return;
      await this.publish(a);
    }
  }

  /**
   * The announcement a delivered message carries, or null when it is none (not JSON, a
   * field missing or of the wrong type): then the message is terminated, so it is never
   * redelivered, and logged in one line.
   */
  accept(m: JsMsg): A | null {
    try {
      return validate(this.o.schema, m.json<unknown>());
    } catch (err) {
      this.o.log.warn({ subject: m.subject, seq: m.seq, err: (err as Error).message }, `${this.o.what}: ${this.o.malformed}; terminated`);
      m.term(this.o.malformed);
      return null;
    }
  }

  /**
   * Pulls for one delivery: `run`, then ack; a failure is nak'ed with a growing delay
   * (redelivered), and raises `copies-behind` once it has failed BEHIND_AFTER times.
   */
  async work(m: JsMsg, a: A, run: () => Promise<void>): Promise<void> {
    const working = setInterval(() => m.working(), 10_000);
    try {
      await run();
      m.ack();
    } catch (e) {
      const err = e as Error;
      const tries = m.info.redeliveryCount;
      const delay = Math.min(MAX_RETRY_DELAY_MS, 1000 * 2 ** Math.min(6, tries));
      this.failures.failed++;
      this.failures.lastError = err.message;
      this.o.log.warn({ ...this.o.describe(a), source: a.source, retryInMs: delay, err: err.message }, `${this.o.what}: pull failed; tried again later`);
      if (tries >= BEHIND_AFTER && performance.now() - this.behindAlarmAt > BEHIND_ALARM_EVERY_MS) {
        this.behindAlarmAt = performance.now();
        this.o.raiseAlarm?.(this.o.behindAlarm(a, tries, err, this.pendingCount));
      }
      m.nak(delay);
    } finally {
      clearInterval(working);
    }
  }

  private keep(id: string, a: A): void {
    if (this.unpublished.size >= this.o.maxUnpublished && !this.unpublished.has(id)) return;
    this.unpublished.set(id, a);
  }

  private async loop(): Promise<void> {
    while (!this.o.signal.aborted) {
      try {
        if (!this.bound) {
          await this.bind();
          continue;
        }
        await this.round();
      } catch (err) {
        if (this.o.signal.aborted) break;
        this.o.log[this.o.roundFailureLevel]({ err: (err as Error).message }, `${this.o.what}: round failed; again shortly`);
        await this.sleep(1000);
      }
    }
  }

  private async bind(): Promise<void> {
    const nc = this.nc!;
    const { stream, durable } = this.o;
    try {
      const jsm = await nc.jetstreamManager({ timeout: JS_TIMEOUT_MS });
      await jsm.streams.info(stream).catch(() =>
        jsm.streams.add({
          name: stream,
          subjects: [this.o.subjects],
          retention: RetentionPolicy.Limits,
          storage: StorageType.File,
          num_replicas: this.o.replicas,
          max_age: nanos(STREAM_MAX_AGE_MS),
          ...(this.o.maxMsgsPerSubject !== undefined ? { max_msgs_per_subject: this.o.maxMsgsPerSubject } : {}),
        }),
      );
      await jsm.consumers.info(stream, durable).catch(() =>
        jsm.consumers.add(stream, {
          durable_name: durable,
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(ACK_WAIT_MS),
          // A node that joins copies what is announced from its start on (CONSUMER_START_MARGIN_MS
          // before it, for clocks of other machines): the copies the others announce to it
          // once it beats (peerJoined) may come before this consumer exists, and a consumer
          // of new messages only would miss them. A node that was down resumes where it was.
          deliver_policy: DeliverPolicy.StartTime,
          opt_start_time: new Date(this.startedAt - CONSUMER_START_MARGIN_MS).toISOString(),
          max_ack_pending: 64,
        }),
      );
      await this.o.onBind?.(nc);
      this.bound = true;
      this.o.log.info({ stream, consumer: durable }, `${this.o.what}: bound`);
    } catch (err) {
      this.o.log.debug({ err: (err as Error).message }, `${this.o.what}: JetStream not ready yet; retrying`);
      await this.sleep(1000);
    }
  }

  /** The service's work before the fetch, then one batch of announcements. */
  private async round(): Promise<void> {
    await this.o.beforeFetch();
    if (this.o.signal.aborted) return;
    const consumer = await this.nc!.jetstream({ timeout: JS_TIMEOUT_MS }).consumers.get(this.o.stream, this.o.durable);
    const batch = await consumer.fetch({ max_messages: this.o.batch.max, expires: this.o.batch.expiresMs });
    for await (const m of batch) {
      if (this.o.signal.aborted) {
        m.nak();
        continue;
      }
      const a = this.accept(m);
      if (a !== null) await this.o.handle(a, m);
    }
    this.pendingCount = await consumer
      .info(true)
      .then((i) => i.num_pending + i.num_ack_pending)
      .catch(() => this.pendingCount);
  }

  private sleep(ms: number): Promise<void> {
    return sleepUnlessStopped(ms, this.o.signal);
  }
}
