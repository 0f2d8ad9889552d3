/**
 * The digests of an upload (MD5 for the ETag; SHA-256 and CRC-32 when the client sends
 * them to be checked), computed off the thread that receives and writes the bytes.
 *
 * Why: MD5 runs at ~700 MB/s on one core, and an upload's receive, write and MD5 all on
 * the main thread held a 1 GB PUT to ~265 MB/s (bench/README.md, s3). A worker thread
 * hashes each batch after it was written, while the main thread receives the next one.
 * An upload that ends within its first batch (small objects, most PUTs) is hashed inline:
 * a round trip to the worker would cost more than the hashing.
 *
 * Batches are buffers of BATCH_BYTES from a pool: the upload copies what it receives into
 * one, writes it, hands it over; the worker hashes it and hands its memory back. Reused
 * buffers spare a fresh 1 MiB allocation per batch (page faults, external memory for the
 * GC to chase), which cost the receiving thread as much as the copy itself.
 *
 * Invariants: an upload's bytes reach its digests in the order they were written; a
 * batch handed to `update` is owned by the hasher (its memory is transferred to the
 * worker, not copied, and must not be touched again); at most MAX_QUEUED bytes of an upload wait in the worker,
 * beyond that `update` waits (the receive loop stops reading, TCP slows the client); a
 * worker that dies fails the uploads it was hashing (HASH_WORKER_FAILED), never gives a
 * wrong digest, and the next upload starts a new one.
 */
import { createHash, type Hash } from 'node:crypto';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';

export type HashRequest =
  | { op: 'open'; id: number; sha256: boolean; crc32: boolean }
  | { op: 'update'; id: number; batch: ArrayBuffer; length: number }
  | { op: 'digest'; id: number }
  | { op: 'drop'; id: number };

/** `hashed` gives the batch's memory back for reuse. */
export type HashReply =
  { op: 'hashed'; id: number; batch: ArrayBuffer; length: number } | { op: 'digest'; id: number; md5: string; sha256: string | null; crc32: number | null };

export interface Digests {
  md5Hex: string;
  /** Hex, when asked for. */
  sha256Hex: string | null;
  /** Unsigned, when asked for. */
  crc32: number | null;
}

export interface DigestOptions {
  sha256: boolean;
  crc32: boolean;
}

/** A failed hashing worker (its uploads are refused, not stored with a digest that may be wrong). */
export class HashWorkerError extends Error {
  readonly code = 'HASH_WORKER_FAILED';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'HashWorkerError';
  }
}

/** The size of an upload's batches (each written with one write, then hashed). */
export const BATCH_BYTES = 1024 * 1024;

/** Bytes of one upload that may wait in the worker before `update` waits. */
const MAX_QUEUED = 8 * 1024 * 1024;

/** Batch buffers kept for reuse; beyond, a returned one is left to the GC. */
const POOLED_BATCHES = 16;

const self = fileURLToPath(import.meta.url);
/** The worker's file beside this one: .ts under tsx (tests, benches), .js in the build. */
const WORKER_FILE = join(dirname(self), `hash-worker${extname(self)}`);

/** A worker thread does not inherit tsx's loader: under tsx it registers it before loading the worker's source. */
function spawnWorker(): Worker {
  if (extname(self) !== '.ts') return new Worker(WORKER_FILE);
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return new Worker(`import(${tsx}).then((tsx) => { tsx.register(); return import(${JSON.stringify(pathToFileURL(WORKER_FILE).href)}); })`, { eval: true });
}

interface Pending {
  queued: number;
  drained: (() => void) | null;
  done: { resolve: (d: Digests) => void; reject: (e: Error) => void } | null;
}

/** One hashing worker shared by the uploads of a listener; started on first need. */
export class UploadHasher {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly free: Buffer[] = [];
  private nextId = 1;

  /** An empty batch of BATCH_BYTES (from the pool when one is free): its own memory, so it can be transferred. */
  batch(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES);
  }

  /** @internal A batch whose bytes were hashed: kept for the next upload. */
  recycle(batch: Buffer): void {
    if (this.free.length < POOLED_BATCHES && batch.length === BATCH_BYTES) this.free.push(batch);
  }

  /** The digests of one upload: feed it each written batch in order, then ask for the digests. */
  begin(opts: DigestOptions): UploadDigest {
    return new UploadDigest(this, opts);
  }

  /** Ends the worker; uploads still hashing fail. */
  async stop(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    this.failAll(new HashWorkerError('the listener stopped'));
    await worker?.terminate();
  }

  /** @internal Opens an upload's state in the worker. */
  open(opts: DigestOptions): number {
    const worker = this.running();
    const id = this.nextId++;
    this.pending.set(id, { queued: 0, drained: null, done: null });
    worker.postMessage({ op: 'open', id, sha256: opts.sha256, crc32: opts.crc32 } satisfies HashRequest);
    return id;
  }

  /** @internal Hands the first `length` bytes of `batch` (owned from now on by the worker) to upload `id`; resolves once it may send more. */
  async update(id: number, batch: Buffer, length: number): Promise<void> {
    const p = this.pending.get(id);
    if (!p || !this.worker) throw new HashWorkerError('the hashing worker stopped during the upload');
    const owned = ownedArrayBuffer(batch);
    p.queued += length;
    this.worker.postMessage({ op: 'update', id, batch: owned, length } satisfies HashRequest, [owned]);
    if (p.queued > MAX_QUEUED) await new Promise<void>((resolve) => (p.drained = resolve));
  }

  /** @internal The digests of upload `id`, once the worker has hashed all it was sent. */
  digest(id: number): Promise<Digests> {
    const p = this.pending.get(id);
    if (!p || !this.worker) return Promise.reject(new HashWorkerError('the hashing worker stopped during the upload'));
    const worker = this.worker;
    return new Promise<Digests>((resolve, reject) => {
      p.done = { resolve, reject };
      worker.postMessage({ op: 'digest', id } satisfies HashRequest);
    });
  }

  /** @internal Forgets upload `id` (it failed or was refused). */
  drop(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.drained?.();
    this.worker?.postMessage({ op: 'drop', id } satisfies HashRequest);
  }

  private running(): Worker {
    if (this.worker) return this.worker;
    const worker = spawnWorker();
    // An idle worker does not keep the process alive; uploads in flight keep it busy.
    worker.unref();
    worker.on('message', (m: HashReply) => this.onReply(m));
    const failed = (err: Error): void => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.failAll(new HashWorkerError(`the hashing worker failed: ${err.message}`, { cause: err }));
    };
    worker.on('error', failed);
    worker.on('exit', (code) => failed(new Error(`exit ${code}`)));
    this.worker = worker;
    return worker;
  }

  private onReply(m: HashReply): void {
    const p = this.pending.get(m.id);
    if (!p) {
      if (m.op === 'hashed') this.recycle(Buffer.from(m.batch));
      return;
    }
    if (m.op === 'hashed') {
      this.recycle(Buffer.from(m.batch));
      p.queued -= m.length;
      if (p.queued <= MAX_QUEUED && p.drained) {
        const drained = p.drained;
        p.drained = null;
        drained();
      }
      return;
    }
    this.pending.delete(m.id);
    p.done?.resolve({ md5Hex: m.md5, sha256Hex: m.sha256, crc32: m.crc32 });
  }

  private failAll(err: HashWorkerError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      p.drained?.();
      p.done?.reject(err);
    }
  }
}

/**
 * One upload's digests: inline while everything fits its first (and last) batch, in the
 * worker from the first batch that is not the last.
 */
export class UploadDigest {
  private inline: { md5: Hash; sha256: Hash | null; crc32: number | null } | null = null;
  private id: number | null = null;
  private failed: HashWorkerError | null = null;

  constructor(
    private readonly hasher: UploadHasher,
    private readonly opts: DigestOptions,
  ) {}

  /**
   * Adds the first `length` bytes of a written batch (from `UploadHasher.batch`); `last`
   * says no batch follows. The batch belongs to the hasher from now on.
   */
  async update(batch: Buffer, length: number, last: boolean): Promise<void> {
    if (this.id === null && (last || this.inline)) {
      this.inline ??= { md5: createHash('md5'), sha256: this.opts.sha256 ? createHash('sha256') : null, crc32: this.opts.crc32 ? 0 : null };
      if (length > 0) {
        const bytes = batch.subarray(0, length);
        this.inline.md5.update(bytes);
        this.inline.sha256?.update(bytes);
        if (this.inline.crc32 !== null) this.inline.crc32 = crc32(bytes, this.inline.crc32);
      }
      this.hasher.recycle(batch);
      return;
    }
    // Nothing to send (and zlib.crc32 of an empty view of its own ArrayBuffer answers 0, not the running value: Node 20).
    if (length === 0) {
      this.hasher.recycle(batch);
      return;
    }
    this.id ??= this.hasher.open(this.opts);
    try {
      await this.hasher.update(this.id, batch, length);
    } catch (err) {
      this.failed = err as HashWorkerError;
      throw err;
    }
  }

  async digest(): Promise<Digests> {
    if (this.failed) throw this.failed;
    if (this.id !== null) return this.hasher.digest(this.id);
    const inline = this.inline ?? { md5: createHash('md5'), sha256: this.opts.sha256 ? createHash('sha256') : null, crc32: this.opts.crc32 ? 0 : null };
    return { md5Hex: inline.md5.digest('hex'), sha256Hex: inline.sha256?.digest('hex') ?? null, crc32: inline.crc32 };
  }

  /** The upload failed: the worker forgets it. */
  drop(): void {
    if (this.id !== null) this.hasher.drop(this.id);
  }
}

/** An ArrayBuffer holding `buf`'s bytes that may be transferred: its own when it has one to itself, else a copy. */
function ownedArrayBuffer(buf: Buffer): ArrayBuffer {
  if (buf.byteOffset === 0 && buf.buffer.byteLength === buf.length && buf.buffer instanceof ArrayBuffer) return buf.buffer;
  const copy = new ArrayBuffer(buf.length);
  new Uint8Array(copy).set(buf);
  return copy;
}
