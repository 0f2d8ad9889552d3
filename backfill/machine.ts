/**
 * The back-fill actor of one camera: takes the camera's due gap records one at a time
 * (one replay per camera besides its live stream), each when the node grants it a slot
 * (`backfillConcurrency` on the node, counted by the manager).
 *
 *   idle ──DUE──► queued ──GO──► claiming ──record──► fetching ──done──► done ──► idle (or queued)
 *     ▲  (emits slot.wanted)       │ nothing due          │ threw
 *     │                            ▼                      ▼
 *     └──────────────────────── done ◄──────────── releasing (the record back to the ledger)
 *
 * - `claiming` marks the record `fetching` (injected `claim`; null when it is no longer due);
 * - `fetching` runs one attempt (injected `attempt`, backfill/attempt.ts runAttempt);
 * - `releasing`: the attempt threw; its record goes back to the ledger with the error
 *   (injected `release`, releaseAttempt), so it never stays `fetching` until a restart;
 *   when even that fails, the record is claimed again after `retryMs`;
 * - a record due later (`DUE` with `inMs`, a retry of a failed attempt) is a delayed
 *   event; `RECORDING` (the camera records again) checks the camera's due records after
 *   `sdFlushMs`, when its card has flushed (injected `checkDue`).
 *
 * Everything goes out as emitted events: `progress` (each record's state, published on
 * `rec.v1.backfill.<camera>`), `alarm` (given up), `slot.wanted` / `slot.freed` (the
 * manager's count), `failed` (for the log). The context is data: ids, delays, the queue.
 */
import { assign, emit, enqueueActions, fromPromise, raise, setup } from 'xstate';
import type { GapRecord } from '../index/records.ts';
import type { AlarmInput } from '../lib/alarms.ts';

export interface BackfillInput {
  camera: string;
  /** After the camera records again, its records are checked this much later (backfillDelayMs). */
  sdFlushMs: number;
  /** A record that could not even be given back is claimed again this much later (backfillRetryMs). */
  retryMs: number;
}

interface BackfillContext extends BackfillInput {
  /** Start times of the records waiting for a slot, in order. */
  queue: number[];
  /** The record being claimed, fetched or released. */
  current: number | null;
  /** The `fetching` record of the attempt running. */
  gap: (GapRecord & { endMs: number }) | null;
}

/** What an attempt (or its release) leaves: the records it stored, when to retry which, an alarm. */
export interface AttemptOutcome {
  records: GapRecord[];
  retries: { startMs: number; inMs: number }[];
  alarm: AlarmInput | null;
}

export type BackfillEvent =
  /** A record is due now, or in `inMs`. */
  | { type: 'DUE'; startMs: number; inMs?: number }
  /** The camera records again. */
  | { type: 'RECORDING' }
  /** The manager grants a node slot. */
  | { type: 'GO' }
  /** (raised) the card has flushed: check the camera's due records. */
  | { type: 'CHECK' };

export type BackfillEmitted =
  | { type: 'slot.wanted'; camera: string }
  | { type: 'slot.freed'; camera: string }
  | { type: 'progress'; gap: GapRecord }
  | { type: 'alarm'; alarm: AlarmInput }
  | { type: 'failed'; camera: string; startMs: number; stage: 'claim' | 'attempt' | 'release'; error: unknown };

const notProvided = (what: string) => (): never => {
  throw new Error(`back-fill machine: ${what} not provided (.provide())`);
};
/** A parameterized action the owner provides (its params typed here). */
const injected =
  <P>(what: string) =>
  (_: unknown, params: P): void => {
    throw new Error(`back-fill machine: ${what} not provided, called with ${JSON.stringify(params)}`);
  };

type Claimed = (GapRecord & { endMs: number }) | null;

/** The stage that threw, for the owner's log. */
const failure = (stage: 'claim' | 'attempt' | 'release', context: BackfillContext, event: unknown) => ({
  type: 'failed' as const,
  camera: context.camera,
  startMs: context.current ?? -1,
  stage,
  error: (event as { error?: unknown }).error,
});

export const backfillMachine = setup({
  types: {
    context: {} as BackfillContext,
    events: {} as BackfillEvent,
    input: {} as BackfillInput,
    emitted: {} as BackfillEmitted,
  },
  actors: {
    claim: fromPromise<Claimed, { camera: string; startMs: number }>(notProvided('claim')),
    attempt: fromPromise<AttemptOutcome, { gap: GapRecord & { endMs: number } }>(notProvided('attempt')),
    release: fromPromise<AttemptOutcome, { gap: GapRecord & { endMs: number }; error: unknown }>(notProvided('release')),
  },
  delays: {
    sdFlush: ({ context }) => context.sdFlushMs,
  },
  guards: {
    queued: ({ context }) => context.queue.length > 0,
    later: ({ event }) => event.type === 'DUE' && (event.inMs ?? 0) > 0,
    /** The claim's answer: the record is this camera's to fetch (null: nothing to fetch any more). */
    claimed: ({ event }) => (event as unknown as { output: Claimed }).output !== null,
  },
  actions: {
    /** Injected: queues the camera's due records (the manager reads the ledger and sends DUE). */
    checkDue: injected<{ camera: string }>('checkDue'),
    enqueue: assign(({ context, event }) => {
      if (event.type !== 'DUE' || context.queue.includes(event.startMs)) return {};
      return { queue: [...context.queue, event.startMs] };
    }),
    dueLater: enqueueActions(({ event, enqueue }) => {
      if (event.type !== 'DUE' || event.inMs === undefined) return;
      enqueue.raise({ type: 'DUE', startMs: event.startMs }, { delay: event.inMs });
    }),
    take: assign(({ context }) => ({ current: context.queue[0] ?? null, queue: context.queue.slice(1) })),
    /** A camera recording again: its SD card has the gap's video once the camera flushed it. */
    checkAfterSdFlush: raise({ type: 'CHECK' }, { delay: 'sdFlush' }),
    wantSlot: emit(({ context }) => ({ type: 'slot.wanted' as const, camera: context.camera })),
    holdClaim: enqueueActions(({ event, enqueue }) => {
      const gap = (event as unknown as { output: Claimed }).output!;
      enqueue.assign({ gap });
      enqueue.emit({ type: 'progress', gap });
    }),
    freeSlot: emit(({ context }) => ({ type: 'slot.freed' as const, camera: context.camera })),
    clearCurrent: assign({ current: null, gap: null }),
    /** What an attempt or a release left: each record's state, an alarm, the retries as delayed events. */
    report: enqueueActions(({ event, enqueue }) => {
      const outcome = (event as unknown as { output: AttemptOutcome }).output;
      for (const gap of outcome.records) enqueue.emit({ type: 'progress', gap });
      if (outcome.alarm) enqueue.emit({ type: 'alarm', alarm: outcome.alarm });
      for (const r of outcome.retries) enqueue.raise({ type: 'DUE', startMs: r.startMs }, { delay: r.inMs });
    }),
    failedClaim: emit(({ context, event }) => failure('claim', context, event)),
    failedAttempt: emit(({ context, event }) => failure('attempt', context, event)),
    failedRelease: emit(({ context, event }) => failure('release', context, event)),
    /** Even the release failed: claim the record again later (it is this camera's, and nothing else fetches it). */
    retryRelease: enqueueActions(({ context, enqueue }) => {
      if (context.current !== null) enqueue.raise({ type: 'DUE', startMs: context.current }, { delay: context.retryMs });
    }),
  },
}).createMachine({
  id: 'backfill',
  context: ({ input }) => ({ ...input, queue: [], current: null, gap: null }),
  on: {
    DUE: [{ guard: 'later', actions: 'dueLater' }, { actions: 'enqueue' }],
    RECORDING: { actions: 'checkAfterSdFlush' },
    CHECK: { actions: { type: 'checkDue', params: ({ context }) => ({ camera: context.camera }) } },
  },
  initial: 'idle',
  states: {
    idle: {
      always: { guard: 'queued', target: 'queued' },
    },
    queued: {
      entry: 'wantSlot',
      on: { GO: 'claiming' },
    },
    claiming: {
      entry: 'take',
      invoke: {
        src: 'claim',
        input: ({ context }) => ({ camera: context.camera, startMs: context.current! }),
        onDone: [{ guard: 'claimed', target: 'fetching', actions: 'holdClaim' }, { target: 'done' }],
        onError: { target: 'done', actions: 'failedClaim' },
      },
    },
    fetching: {
      invoke: {
        src: 'attempt',
        input: ({ context }) => ({ gap: context.gap! }),
        onDone: { target: 'done', actions: 'report' },
        onError: { target: 'releasing', actions: 'failedAttempt' },
      },
    },
    releasing: {
      invoke: {
        src: 'release',
        input: ({ context, event }) => ({ gap: context.gap!, error: (event as { error?: unknown }).error }),
        onDone: { target: 'done', actions: 'report' },
        onError: { target: 'done', actions: ['failedRelease', 'retryRelease'] },
      },
    },
    done: {
      entry: ['freeSlot', 'clearCurrent'],
      always: 'idle',
    },
  },
});
