/**
 * Lock changes a peer asked of this node for pictures it does not hold yet
 * (docs/design/pictures.md "Copies in a cluster", locks): a copy of the picture may be
 * in flight, its range read from its source before the lock and indexed here after the
 * lock's request found nothing. The change is noted and applied in the commit that
 * indexes the copy (pictures/copy-pack.ts), over the locks the range carried, so a lock
 * acknowledged anywhere reaches a copy made at the same moment.
 *
 * Invariant: per picture only the latest change asked is kept (a lock, or an unlock),
 * for `ttlMs` (a copy in flight lands within a pull's duration) and at most `max` of
 * them (the oldest go first). Pure: the caller gives the time.
 */
import type { CopiedLock, PictureKey } from '../index/pictures.ts';

/** A change asked for one picture: locked until `untilMs` (null: until unlocked), or unlocked. */
export type LockChange = { unlock: false; untilMs: number | null } | { unlock: true };

interface Noted {
  key: PictureKey;
  change: LockChange;
  atMs: number;
}

const idOf = (k: PictureKey | CopiedLock): string => `${k[0]}.${k[1]}.${k[2]}`;

export class PendingLocks {
  private readonly noted = new Map<string, Noted>();

  constructor(
    private readonly ttlMs = 10 * 60_000,
    private readonly max = 10_000,
  ) {}

  /** Notes the latest change asked for `key` at `nowMs` (it replaces an earlier one). */
  note(key: PictureKey, change: LockChange, nowMs: number): void {
    const id = idOf(key);
    this.noted.delete(id);
    this.noted.set(id, { key, change, atMs: nowMs });
    // A Map iterates in insertion order: the first is the oldest note.
    while (this.noted.size > this.max) this.noted.delete(this.noted.keys().next().value!);
  }

  /**
   * The locks to commit with the copied pictures `keys`: the range's `locks`, with each
   * change noted for one of them (and not expired at `nowMs`) applied over it. The notes
   * stay until `forget` (after the commit: one that failed keeps them for the retry).
   */
  merge(keys: readonly PictureKey[], locks: readonly CopiedLock[], nowMs: number): CopiedLock[] {
    for (const [id, n] of this.noted) {
      if (nowMs - n.atMs <= this.ttlMs) break;
      this.noted.delete(id);
    }
    if (this.noted.size === 0) return [...locks];
    const out = new Map(locks.map((l) => [idOf(l), l]));
    for (const key of keys) {
      const id = idOf(key);
      const n = this.noted.get(id);
      if (!n) continue;
      if (n.change.unlock) out.delete(id);
      else out.set(id, [key[0], key[1], key[2], n.change.untilMs]);
    }
    return [...out.values()];
  }

  /** Forgets the notes of `keys` (their copies are committed with them). */
  forget(keys: readonly PictureKey[]): void {
    if (this.noted.size === 0) return;
    for (const key of keys) this.noted.delete(idOf(key));
  }

  get size(): number {
    return this.noted.size;
  }
}
