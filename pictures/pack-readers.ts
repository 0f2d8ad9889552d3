/**
 * Open read handles of picture packs, kept for the next read (docs/design/pictures.md,
 * "Reads"). A picture read was open + pread + close, three trips through libuv's pool
 * for one 200 kB read; with the pack's handle kept it is one.
 *
 * Invariants: a handle is closed only once no read is using it (evicted or forgotten
 * while in use: closed when the last read ends), so a read never sees EBADF; a pack
 * that cover deletes is forgotten at once (its handle closed, so the disk space of the
 * unlinked file is freed); a failed open is not kept (the next read tries again); at
 * most `max` handles are open when no read is in flight.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';

interface Slot {
  handle: Promise<FileHandle>;
  users: number;
  /** Evicted or forgotten: close when the last user is done. */
  retired: boolean;
}

export class PackReaders {
  private readonly slots: LRUCache<string, Slot>;

  constructor(max = 64) {
    this.slots = new LRUCache<string, Slot>({
      max,
      dispose: (slot) => this.retire(slot),
    });
  }

  /** `length` bytes at `offset` of the pack at `path`; fewer bytes than asked: ERANGE. Open errors (ENOENT) are thrown as they are. */
  async read(path: string, offset: number, length: number): Promise<Buffer> {
    let slot = this.slots.get(path);
    if (!slot) {
      slot = { handle: open(path, 'r'), users: 0, retired: false };
      this.slots.set(path, slot);
      const opened = slot;
      // A failed open is dropped so the next read tries again (only if still the cached one).
      void slot.handle.catch(() => {
        if (this.slots.peek(path) === opened) this.slots.delete(path);
      });
    }
    slot.users++;
    try {
      const fh = await slot.handle;
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (bytesRead !== length) throw Object.assign(new Error(`${path} ends before byte ${offset + length - 1}`), { code: 'ERANGE' });
      return buf;
    } finally {
      slot.users--;
      if (slot.retired && slot.users === 0) this.close(slot);
    }
  }

  /** The pack at `path` is gone (covered, dropped): its handle is closed once unused. */
  forget(path: string): void {
    this.slots.delete(path);
  }

  /** Closes every handle (reads in flight keep theirs until they end). */
  closeAll(): void {
    this.slots.clear();
  }

  private retire(slot: Slot): void {
    slot.retired = true;
    if (slot.users === 0) this.close(slot);
  }

  private close(slot: Slot): void {
    void slot.handle.then(
      (fh) => fh.close().catch(() => undefined),
      () => undefined,
    );
  }
}
