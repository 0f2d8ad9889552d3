/**
 * Computes the visual signature of each stored picture off the write path (a write is
 * answered when durable; its signature follows within milliseconds): one picture at a
 * time, committed in batches. At most `maxPending` wait; more are skipped and counted
 * (`skipped`), as are pictures a crash caught before their signature's commit: those
 * are not found by search by image, everything else about them is unchanged.
 */
import type { RecorderIndex } from '../index/db.ts';
import type { PictureKey } from '../index/pictures.ts';
import type { Logger } from '../lib/log.ts';
import { signatureOf } from './signature.ts';

export class Signer {
  private readonly queue: { key: PictureKey; bytes: Buffer }[] = [];
  private running: Promise<void> | null = null;
  skipped = 0;
  signed = 0;

  constructor(
    private readonly index: RecorderIndex,
    private readonly log: Logger,
    private readonly maxPending = 2000,
    /** Told of each batch once committed (the in-memory signature index). */
    private readonly onSigned: (done: readonly { key: PictureKey; signature: Buffer }[]) => void = () => undefined,
  ) {}

  add(key: PictureKey, bytes: Buffer): void {
    if (this.queue.length >= this.maxPending) {
      this.skipped++;
      return;
    }
    this.queue.push({ key, bytes });
    this.kick();
  }

  private kick(): void {
    if (this.running) return;
    this.running = Promise.resolve()
      .then(() => this.drain())
      .finally(() => {
        this.running = null;
        if (this.queue.length > 0) this.kick();
      });
  }

  /** Pictures waiting for their signature. */
  get pending(): number {
    return this.queue.length + (this.running ? 1 : 0);
  }

  async stop(): Promise<void> {
    this.queue.length = 0;
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, 64);
      const done: { key: PictureKey; signature: Buffer }[] = [];
      for (const { key, bytes } of batch) {
        try {
          done.push({ key, signature: await signatureOf(bytes) });
        } catch (err) {
          this.skipped++;
          this.log.warn({ err, camera: key[0] }, 'picture signature not computed');
        }
      }
      try {
        await this.index.pictures.putSignatures(done);
        this.signed += done.length;
        this.onSigned(done);
      } catch (err) {
        this.skipped += done.length;
        this.log.warn({ err }, 'picture signatures not stored');
      }
    }
  }
}
