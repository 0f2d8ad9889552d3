/**
 * The lifecycle of a node (docs/design/lifecycle.md): components start in order and stop
 * in reverse, and one AbortSignal reaches every component.
 *
 * - `start(name, fn, stop)` runs one component's start and, once it succeeded, keeps
 *   its stop; a start asked for after the shutdown began is refused (SHUTTING_DOWN)
 *   and starts nothing.
 * - `stop()` first aborts `signal` (reason: a SHUTTING_DOWN RecorderError), so from that
 *   instant every edge refuses new requests with a typed 503 and no component starts
 *   new work (a camera, a back-fill attempt, a restart), then stops the components one
 *   at a time, last started first, each after the one that depends on it. A stop that
 *   fails is logged and the next one runs: the data-dir lock is always released.
 *   `stop()` is idempotent; every caller waits for the same shutdown.
 * - A parent signal (the CLI's SIGTERM) aborting starts `stop()`. During the start, the
 *   component starting finishes its start first (it may hold resources), the next
 *   `start()` throws SHUTTING_DOWN, and everything started is stopped in reverse.
 *
 * This replaces the flags each part kept for "we are stopping" (the node's, the camera
 * supervisor's, the back-fill manager's, the sample-table builder's, the embedded NATS
 * supervisor's): they read `signal.aborted`, or follow the signal.
 */
import { setMaxListeners } from 'node:events';
import { RecorderError } from './errors.ts';
import type { Logger } from './log.ts';

/**
 * Resolves after `ms`, or at once when `signal` aborts; never rejects. A component's
 * wait between tries (a tick, a backoff) that its stop cuts short.
 */
export function sleepUnlessStopped(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The error of anything refused because the node is shutting down (503). */
export function shuttingDown(what = 'the request'): RecorderError {
  return new RecorderError('SHUTTING_DOWN', `the recorder is shutting down: ${what} is refused`);
}

/** Throws SHUTTING_DOWN once `signal` has aborted. */
export function assertRunning(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw shuttingDown(what);
}

/**
 * A component's own stop signal that follows the node's: aborted by the component's
 * stop() (when it is used alone: tests, benches, the CLI) or as soon as `parent` aborts.
 */
export function followSignal(parent: AbortSignal | undefined): AbortController {
  const own = new AbortController();
  if (parent?.aborted) own.abort(parent.reason);
  else parent?.addEventListener('abort', () => own.abort(parent.reason), { once: true });
  return own;
}

interface Started {
  name: string;
  stop: () => Promise<void> | void;
}

export class Lifecycle {
  private readonly controller = new AbortController();
  private readonly started: Started[] = [];
  private stopping: Promise<void> | null = null;
  /** The start running now: a shutdown waits for it (its component may already hold resources). */
  private starting: Promise<unknown> | null = null;

  constructor(
    private readonly log: Logger,
    parent?: AbortSignal,
    /** Logged once every component has stopped. */
    private readonly stoppedMessage = 'stopped',
  ) {
    // The node's shutdown signal: every long-lived component (cameras' supervisors, copies,
    // the object log, back-fill, …) listens on it once, more than Node's default warning
    // limit of 10 for one target; a listener per request would still show, past 100.
    setMaxListeners(100, this.controller.signal);
    if (parent?.aborted) this.controller.abort(shuttingDown());
    parent?.addEventListener('abort', () => void this.stop(), { once: true });
  }

  /** Aborted when the shutdown begins, with a SHUTTING_DOWN RecorderError as its reason. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Names of the components started and not stopped yet, in start order. */
  get components(): string[] {
    return this.started.map((s) => s.name);
  }

  /**
   * Starts one component: `start` runs (refused with SHUTTING_DOWN once the shutdown
   * began), then `stop` is kept to run in reverse order. A start that throws keeps no stop.
   */
  async start<T>(name: string, start: () => T | Promise<T>, stop?: (value: T) => Promise<void> | void): Promise<T> {
    assertRunning(this.signal, `starting ${name}`);
    const running = (async () => start())();
    this.starting = running;
    let value: T;
    try {
      value = await running;
    } finally {
      this.starting = null;
    }
    if (stop) this.started.push({ name, stop: () => stop(value) });
    // Aborted while it started: it is stopped with the rest, and the start goes no further.
    assertRunning(this.signal, `starting what follows ${name}`);
    return value;
  }

  /** Begins the shutdown and waits for every component to stop (see the module comment). */
  stop(): Promise<void> {
    this.stopping ??= this.stopAll();
    return this.stopping;
  }

  private async stopAll(): Promise<void> {
    if (!this.controller.signal.aborted) this.controller.abort(shuttingDown());
    // A component still starting (a SIGTERM during reconcile) finishes first, then stops with the rest.
    await this.starting?.catch(() => undefined);
    for (let c = this.started.pop(); c; c = this.started.pop()) {
      const startedAt = Date.now();
      try {
        await c.stop();
      } catch (err) {
        this.log.error({ err, component: c.name }, 'stopping a component failed; the others are stopped');
      }
      this.log.debug({ component: c.name, ms: Date.now() - startedAt }, 'component stopped');
    }
    this.log.info(this.stoppedMessage);
  }
}
