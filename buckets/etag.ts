/**
 * S3's ETag of bytes as they stream by: the MD5 in hex, or for an object completed from
 * parts, the MD5 of the parts' MD5s, `-` and their count (the part sizes tell where
 * each part ends). The scrub checks stored copies with it, and a cluster node a copy it
 * pulled.
 */
import { createHash, type Hash } from 'node:crypto';

export class EtagHasher {
  private readonly whole: Hash | null;
  private readonly digests: Hash | null;
  private part = 0;
  private left: number;
  private hash: Hash;
  private seen = 0;

  /** `partSizes`: a multipart object's (their sum is its size); absent: a plain MD5. */
  constructor(private readonly partSizes?: readonly number[]) {
    this.whole = partSizes ? null : createHash('md5');
    this.digests = partSizes ? createHash('md5') : null;
    this.left = partSizes?.[0] ?? 0;
    this.hash = createHash('md5');
  }

  /** Bytes of the object, in order (none past its end). */
  update(chunk: Buffer): void {
    this.seen += chunk.length;
    if (this.whole) return void this.whole.update(chunk);
    const sizes = this.partSizes!;
    for (let at = 0; at < chunk.length;) {
      while (this.left === 0 && this.part < sizes.length - 1) this.nextPart();
      const n = Math.min(this.left, chunk.length - at);
      if (n === 0) return; // bytes past the last part: not the object's
      this.hash.update(chunk.subarray(at, at + n));
      at += n;
      this.left -= n;
    }
  }

  /** How many bytes were given. */
  get bytes(): number {
    return this.seen;
  }

  digest(): string {
    if (this.whole) return this.whole.digest('hex');
    const sizes = this.partSizes!;
    while (this.part < sizes.length - 1) this.nextPart();
    this.digests!.update(this.hash.digest());
    return `${this.digests!.digest('hex')}-${sizes.length}`;
  }

  private nextPart(): void {
    this.digests!.update(this.hash.digest());
    this.hash = createHash('md5');
    this.left = this.partSizes![++this.part]!;
  }
}
