/**
 * lib/read-ahead-stream.ts on real files: every range comes out byte for byte in order
 * with several reads in flight, a file shorter than the range is an error and not a
 * short body, a missing file fails before 'open', and a stream destroyed mid-read
 * closes its file handle (no descriptor is left open).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ReadAheadStream } from '../../lib/read-ahead-stream.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

async function collect(stream: ReadAheadStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const openFds = (): number => readdirSync('/proc/self/fd').length;

test('ranges come out whole and in order with reads in flight', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'object');
  const bytes = randomBytes(1_000_003);
  await writeFile(path, bytes);
  for (const [start, end, chunkBytes, depth] of [
    [0, bytes.length - 1, 65_536, 4],
    [0, bytes.length - 1, 1000, 1],
    [12_345, 987_654, 100_000, 3],
    [999_999, 1_000_002, 1024, 8],
    [5, 5, 1024, 4],
  ] as const) {
    const got = await collect(new ReadAheadStream(path, { start, end, chunkBytes, depth }));
    t.true(got.equals(bytes.subarray(start, end + 1)), `${start}-${end} by ${chunkBytes} × ${depth}`);
  }
  t.is((await collect(new ReadAheadStream(path, { start: 10, end: 9 }))).length, 0, 'an empty range is an empty stream');
});

test('a file shorter than the range fails with ERANGE; a missing file fails before open', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'short');
  await writeFile(path, randomBytes(5000));
  const err = await t.throwsAsync(collect(new ReadAheadStream(path, { start: 0, end: 9999, chunkBytes: 1024 })));
  t.is((err as NodeJS.ErrnoException).code, 'ERANGE');
  const missing = new ReadAheadStream(join(dir, 'gone'), { start: 0, end: 10 });
  let opened = false;
  missing.on('open', () => (opened = true));
  const gone = await t.throwsAsync(collect(missing));
  t.is((gone as NodeJS.ErrnoException).code, 'ENOENT');
  t.false(opened);
});

test('a stream destroyed with reads in flight closes its file', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'object');
  await writeFile(path, randomBytes(8 * 1024 * 1024));
  const before = openFds();
  const stream = new ReadAheadStream(path, { start: 0, end: 8 * 1024 * 1024 - 1, chunkBytes: 64 * 1024, depth: 8 });
  await new Promise<void>((resolve) => stream.once('data', () => resolve()));
  stream.destroy();
  await new Promise<void>((resolve) => stream.once('close', () => resolve()));
  await waitFor('the file handle closed', () => openFds() === before || null);
  t.pass();
});
