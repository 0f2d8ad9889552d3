/**
 * A pool's capacity as uploads see it: what the pool may still take (its capacity less
 * its video and its buckets' committed objects) less the bytes of uploads in flight.
 * `hold` checks and reserves in one synchronous step, so two uploads that each fit but
 * together do not can never both pass the check (before, each compared its size with
 * the room alone, and both were stored). The hold is released once the object is
 * committed (its bytes then count as the bucket's) or refused.
 */
import { S3Error } from './s3-errors.ts';

export interface RoomHold {
  release(): void;
}

const NO_HOLD: RoomHold = { release: () => undefined };

export class PoolRoom {
  private readonly held = new Map<string, number>();

  /** `free(pool)`: bytes the pool may still take by its committed contents; null: no capacity set. */
  constructor(private readonly free: (pool: string) => number | null) {}

  /** Reserves `bytes` of the pool's room, or throws InsufficientStorage (nothing reserved). */
  hold(pool: string, bytes: number): RoomHold {
    const room = this.free(pool);
    if (room === null) return NO_HOLD;
    const inFlight = this.held.get(pool) ?? 0;
    const left = room - inFlight;
    if (bytes > left) {
      throw new S3Error(
        'InsufficientStorage',
        `Pool ${pool} has ${Math.max(0, left)} bytes left of its capacity${inFlight > 0 ? ` (${inFlight} held by uploads in progress)` : ''}, less than this object's ${bytes}`,
      );
    }
    this.held.set(pool, inFlight + bytes);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const rest = (this.held.get(pool) ?? 0) - bytes;
        if (rest > 0) this.held.set(pool, rest);
        else this.held.delete(pool);
      },
    };
  }

  /** Bytes held by uploads in flight in `pool` (tests, diagnostics). */
  inFlight(pool: string): number {
    return this.held.get(pool) ?? 0;
  }
}
