/**
 * The retention actor of one pool. It runs one pass at a time; a KICK (a segment of
 * the pool closed, the timer ticked, the policy or a lock changed) that arrives during
 * a pass is remembered and causes exactly one more pass afterwards, so kicks never
 * pile up and never interleave two passes of the same pool.
 *
 *   idle ──KICK──► passing ──done──► idle        (or straight to passing if kicked meanwhile)
 */
import { assign, fromPromise, setup } from 'xstate';
import type { Logger } from '../lib/log.ts';

export interface RetentionInput {
  pool: string;
  runPass: (pool: string) => Promise<void>;
  log: Logger;
}

interface RetentionContext extends RetentionInput {
  again: boolean;
}

export const retentionMachine = setup({
  types: {
    context: {} as RetentionContext,
    events: {} as { type: 'KICK' },
    input: {} as RetentionInput,
  },
  actors: {
    pass: fromPromise<void, { pool: string; runPass: (pool: string) => Promise<void> }>(({ input }) => input.runPass(input.pool)),
  },
  guards: {
    kickedMeanwhile: ({ context }) => context.again,
  },
}).createMachine({
  id: 'retention',
  context: ({ input }) => ({ ...input, again: false }),
  initial: 'idle',
  states: {
    idle: {
      on: { KICK: 'passing' },
    },
    passing: {
      entry: assign({ again: false }),
      invoke: {
        src: 'pass',
        input: ({ context }) => ({ pool: context.pool, runPass: context.runPass }),
        onDone: 'settle',
        onError: {
          target: 'settle',
          actions: ({ context, event }) => context.log.error({ pool: context.pool, err: event.error }, 'retention pass failed; the next kick retries'),
        },
      },
      on: { KICK: { actions: assign({ again: true }) } },
    },
    settle: {
      always: [{ guard: 'kickedMeanwhile', target: 'passing' }, { target: 'idle' }],
    },
  },
});
