/**
 * buckets/upload-hasher.ts with its real worker thread: the digests of an upload hashed
 * inline (one batch) and in the worker (several) equal node:crypto's and zlib's over the
 * same bytes, also when the body ends at a batch boundary (an empty last batch: zlib's
 * crc32 of an empty view answers 0, which once made every such part a BadDigest); many
 * batches sent faster than the worker hashes wait instead of queueing without bound;
 * a worker stopped during an upload fails it with HASH_WORKER_FAILED, never a digest.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { HashWorkerError, UploadHasher, type Digests } from '../../buckets/upload-hasher.ts';

const MiB = 1024 * 1024;

function expected(bytes: Buffer): Digests {
  return {
    md5Hex: createHash('md5').update(bytes).digest('hex'),
    sha256Hex: createHash('sha256').update(bytes).digest('hex'),
    crc32: crc32(bytes),
  };
}

/** Feeds `bytes` through the hasher's batches, `batch` bytes each, then an empty last batch when `emptyLast`. */
async function hash(hasher: UploadHasher, bytes: Buffer, batch: number, emptyLast = false): Promise<Digests> {
  const digest = hasher.begin({ sha256: true, crc32: true });
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += batch) pieces.push(bytes.subarray(at, at + batch));
  if (emptyLast || pieces.length === 0) pieces.push(Buffer.alloc(0));
  for (const [i, piece] of pieces.entries()) {
    const b = hasher.batch();
    piece.copy(b);
    await digest.update(b, piece.length, i === pieces.length - 1);
  }
  return digest.digest();
}

test('digests equal node:crypto and zlib, inline and in the worker', async (t) => {
  const hasher = new UploadHasher();
  t.teardown(() => hasher.stop());
  const small = randomBytes(4096);
  t.deepEqual(await hash(hasher, small, MiB), expected(small), 'one batch: inline');
  t.deepEqual(await hash(hasher, Buffer.alloc(0), MiB), expected(Buffer.alloc(0)), 'an empty object');
  const big = randomBytes(5 * MiB + 123);
  t.deepEqual(await hash(hasher, big, MiB), expected(big), 'several batches: in the worker');
  t.deepEqual(await hash(hasher, big, 100_000), expected(big), 'batches not full');
  const exact = randomBytes(2 * MiB);
  t.deepEqual(await hash(hasher, exact, MiB, true), expected(exact), 'ending at a batch boundary, an empty last batch');
  const results = await Promise.all([big, exact, small].map((b) => hash(hasher, b, 256 * 1024)));
  t.deepEqual(results, [big, exact, small].map(expected), 'uploads at once keep their own digests');
});

test('batches sent faster than the worker hashes wait for it', async (t) => {
  const hasher = new UploadHasher();
  t.teardown(() => hasher.stop());
  const digest = hasher.begin({ sha256: true, crc32: false });
  const batch = randomBytes(MiB);
  let waited = 0;
  for (let i = 0; i < 64; i++) {
    let settled = false;
    const b = hasher.batch();
    batch.copy(b);
    const sent = digest.update(b, b.length, false).then(() => (settled = true));
    // Without the bound every update settles within this turn (its microtasks run before setImmediate); with it, those
    // beyond 8 MiB queued wait for the worker's answers (hashing 8 MiB takes ~10 ms, a turn much less).
    await new Promise((resolve) => setImmediate(resolve));
    if (!settled) waited++;
    await sent;
  }
  await digest.update(hasher.batch(), 0, true);
  const got = await digest.digest();
  t.is(
    got.md5Hex,
    createHash('md5')
      .update(Buffer.concat(Array.from({ length: 64 }, () => batch)))
      .digest('hex'),
  );
  t.true(waited > 0, 'some updates waited for the worker');
});

test('a worker stopped during an upload fails it typed', async (t) => {
  const hasher = new UploadHasher();
  const digest = hasher.begin({ sha256: false, crc32: false });
  const b = hasher.batch();
  randomBytes(MiB).copy(b);
  await digest.update(b, MiB, false);
  await hasher.stop();
  const err = await t.throwsAsync(digest.digest());
  t.true(err instanceof HashWorkerError);
  t.is((err as HashWorkerError).code, 'HASH_WORKER_FAILED');
  // The next upload starts a new worker.
  const bytes = randomBytes(3 * MiB);
  t.deepEqual(await hash(hasher, bytes, MiB), expected(bytes));
  await hasher.stop();
});
