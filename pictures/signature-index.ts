/**
 * Search by image without reading LMDB per picture: every stored signature kept in
 * memory as flat typed arrays (20 bytes of signature, 8 of time, 4 of seq, 2 of camera
 * per picture: ~34 MB a million), loaded from the index (`picsig`) on the first search
 * and appended to as the signer commits. Pictures covered since are remembered in a set
 * and skipped; once they are a quarter of what is held the arrays are reloaded.
 *
 * The index stays the truth: a search's best matches are checked against it before
 * they are answered (services/picture-service.ts `similar`).
 */
import type { PictureKey, PictureStore } from '../index/pictures.ts';
import { HASH_BYTES, HASH_WEIGHT, POPCOUNT, SIGNATURE_BYTES } from './signature.ts';

const GROW = 1.5;

export class SignatureIndex {
  private n = 0;
  private sigs = new Uint8Array(0);
  private times = new Float64Array(0);
  private seqs = new Uint32Array(0);
  private cams = new Uint16Array(0);
  private readonly cameras: string[] = [];
  private readonly cameraIds = new Map<string, number>();
  private readonly removed = new Set<string>();
  private loaded = false;

  constructor(private readonly store: PictureStore) {}

  /** Signatures just committed (the signer, after `putSignatures`). */
  add(list: readonly { key: PictureKey; signature: Uint8Array }[]): void {
    if (!this.loaded) return; // the first search loads them from the index
    for (const { key, signature } of list) this.push(key, signature);
  }

  /** Pictures covered: no longer answered, and reloaded away once they are many. */
  remove(keys: readonly PictureKey[]): void {
    if (!this.loaded) return;
    for (const k of keys) this.removed.add(`${k[1]}:${k[2]}`);
    if (this.removed.size > this.n / 4) this.loaded = false;
  }

  /** Signatures held (for tests and the bench). */
  get size(): number {
    return this.n - this.removed.size;
  }

  /**
   * The `limit` best matches of `query` among pictures in [fromMs, toMs) that `keep`
   * accepts (by camera), best first: one pass over the arrays.
   */
  best(query: Uint8Array, fromMs: number, toMs: number, limit: number, keep: (camera: string) => boolean): { key: PictureKey; score: number }[] {
    this.load();
    const allowed = this.cameras.map((c) => keep(c));
    const best: { i: number; score: number }[] = [];
    let floor = -1;
    const sigs = this.sigs;
    const colourMax = (SIGNATURE_BYTES - HASH_BYTES) * 255;
    // similarity() of pictures/signature.ts inlined over the flat array (no view per
    // picture), the colour part skipped when the hash alone cannot beat the floor.
    for (let i = 0; i < this.n; i++) {
      const t = this.times[i]!;
      if (t < fromMs || t >= toMs || !allowed[this.cams[i]!]) continue;
      const base = i * SIGNATURE_BYTES;
      let bits = 0;
      for (let j = 0; j < HASH_BYTES; j++) bits += POPCOUNT[query[j]! ^ sigs[base + j]!]!;
      const hashScore = HASH_WEIGHT * (1 - bits / 64);
      if (best.length === limit && hashScore + (1 - HASH_WEIGHT) <= floor) continue;
      let colour = 0;
      for (let j = HASH_BYTES; j < SIGNATURE_BYTES; j++) colour += Math.abs(query[j]! - sigs[base + j]!);
      const score = hashScore + (1 - HASH_WEIGHT) * (1 - colour / colourMax);
      if (best.length === limit && score <= floor) continue;
      if (this.removed.size > 0 && this.removed.has(`${t}:${this.seqs[i]!}`)) continue;
      best.push({ i, score });
      best.sort((a, b) => b.score - a.score);
      if (best.length > limit) best.pop();
      if (best.length === limit) floor = best[limit - 1]!.score;
    }
    return best.map(({ i, score }) => ({ key: [this.cameras[this.cams[i]!]!, this.times[i]!, this.seqs[i]!], score }));
  }

  private load(): void {
    if (this.loaded) return;
    this.n = 0;
    this.removed.clear();
    for (const { key, signature } of this.store.signatures(0, Number.MAX_SAFE_INTEGER, SIGNATURE_BYTES)) this.push(key, signature);
    this.loaded = true;
  }

  private push(key: PictureKey, signature: Uint8Array): void {
    if (this.n === this.times.length) this.grow(Math.max(1024, Math.ceil(this.n * GROW)));
    let cam = this.cameraIds.get(key[0]);
    if (cam === undefined) {
      cam = this.cameras.push(key[0]) - 1;
      this.cameraIds.set(key[0], cam);
    }
    this.sigs.set(signature.subarray(0, SIGNATURE_BYTES), this.n * SIGNATURE_BYTES);
    this.times[this.n] = key[1];
    this.seqs[this.n] = key[2];
    this.cams[this.n] = cam;
    this.n++;
  }

  private grow(capacity: number): void {
    const sigs = new Uint8Array(capacity * SIGNATURE_BYTES);
    sigs.set(this.sigs.subarray(0, this.n * SIGNATURE_BYTES));
    const times = new Float64Array(capacity);
    times.set(this.times.subarray(0, this.n));
    const seqs = new Uint32Array(capacity);
    seqs.set(this.seqs.subarray(0, this.n));
    const cams = new Uint16Array(capacity);
    cams.set(this.cams.subarray(0, this.n));
    this.sigs = sigs;
    this.times = times;
    this.seqs = seqs;
    this.cams = cams;
  }
}
