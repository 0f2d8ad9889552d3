/**
 * The retention actor of one pool. It runs one pass at a time; a KICK (a segment of
 * the pool closed, the policy or a lock changed) that arrives during a pass is
 * remembered and causes exactly one more pass afterwards, so kicks never pile up and
 * never interleave two passes of the same pool. A pool left alone for `tickMs` passes
 * anyway (locks expire, `cycle` video ages without any segment closing).
 *
 *   idle ──KICK, or after tickMs──► passing ──done──► idle   (or straight to passing if kicked meanwhile)
 *
 * The pass itself is injected with `.provide()` (`pass`, the storage supervisor's pass
 * under its mutex); a failed pass is emitted (`pass.failed`) for the owner to log and
 * the next kick or tick retries. The context is the pool's id, its tick and one flag.
 */
import { assign, emit, fromPromise, setup } from 'xstate';

export interface RetentionInput {
  pool: string;
  /** Idle this long, the pool passes without a kick. */
  tickMs: number;
}

interface RetentionContext extends RetentionInput {
  again: boolean;
}

export type RetentionEmitted = { type: 'pass.failed'; pool: string; error: unknown };

export const retentionMachine = setup({
  types: {
    context: {} as RetentionContext,
    events: {} as { type: 'KICK' },
    input: {} as RetentionInput,
    emitted: {} as RetentionEmitted,
  },
  actors: {
    pass: fromPromise<void, { pool: string }>(() => Promise.reject(new Error('retention machine: pass not provided'))),
  },
  delays: {
    tick: ({ context }) => context.tickMs,
  },
  guards: {
    kickedMeanwhile: ({ context }) => context.again,
  },
  actions: {
    remember: assign({ again: true }),
    forget: assign({ again: false }),
    failed: emit(({ context, event }) => ({ type: 'pass.failed' as const, pool: context.pool, error: (event as { error?: unknown }).error })),
  },
}).createMachine({
  id: 'retention',
  context: ({ input }) => ({ ...input, again: false }),
  initial: 'idle',
  states: {
    idle: {
      on: { KICK: 'passing' },
      after: { tick: 'passing' },
    },
    passing: {
      entry: 'forget',
      invoke: {
        src: 'pass',
        input: ({ context }) => ({ pool: context.pool }),
        onDone: 'settle',
        onError: { target: 'settle', actions: 'failed' },
      },
      on: { KICK: { actions: 'remember' } },
    },
    settle: {
      always: [{ guard: 'kickedMeanwhile', target: 'passing' }, { target: 'idle' }],
    },
  },
});

/** The retention machine with the pass it runs (the storage supervisor's; tests inject fakes). */
export function provideRetention(runPass: (pool: string) => Promise<void>) {
  return retentionMachine.provide({ actors: { pass: fromPromise<void, { pool: string }>(({ input }) => runPass(input.pool)) } });
}
