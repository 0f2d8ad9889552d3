/**
 * pictures/pack-readers.ts on real files: reads through kept handles return the bytes
 * asked for; handles stay open between reads and are bounded; a handle evicted or
 * forgotten while reads use it is closed only after they end (no EBADF), and then
 * really closed; a missing pack fails with ENOENT and is tried again once it exists.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PackReaders } from '../../pictures/pack-readers.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

const openFds = (): number => readdirSync('/proc/self/fd').length;

test.serial('reads keep a bounded number of handles and close them when evicted or forgotten', async (t) => {
  const dir = await tempDir(t);
  const packs = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => {
      const path = join(dir, `pack-${i}`);
      const bytes = randomBytes(100_000);
      await writeFile(path, bytes);
      return { path, bytes };
    }),
  );
  const before = openFds();
  const readers = new PackReaders(3);
  for (const { path, bytes } of packs) t.true((await readers.read(path, 1000, 5000)).equals(bytes.subarray(1000, 6000)));
  await waitFor('evicted handles closed', () => openFds() === before + 3 || null);
  t.true((await readers.read(packs[4]!.path, 0, 10)).equals(packs[4]!.bytes.subarray(0, 10)));
  t.is(openFds(), before + 3, 'a kept handle is reused');

  // Forgotten while 20 reads use it: they all complete with the right bytes, then it closes.
  const { path, bytes } = packs[4]!;
  const reads = Array.from({ length: 20 }, (_, i) => readers.read(path, i * 1000, 1000));
  readers.forget(path);
  const got = await Promise.all(reads);
  got.forEach((b, i) => t.true(b.equals(bytes.subarray(i * 1000, (i + 1) * 1000))));
  await waitFor('the forgotten handle closed', () => openFds() === before + 2 || null);
  readers.closeAll();
  await waitFor('every handle closed', () => openFds() === before || null);
});

test('a missing pack is ENOENT, read again once it exists; a short one is ERANGE', async (t) => {
  const dir = await tempDir(t);
  const readers = new PackReaders();
  t.teardown(() => readers.closeAll());
  const path = join(dir, 'later');
  const missing = await t.throwsAsync(readers.read(path, 0, 10));
  t.is((missing as NodeJS.ErrnoException).code, 'ENOENT');
  const bytes = randomBytes(50);
  await writeFile(path, bytes);
  t.true((await readers.read(path, 0, 10)).equals(bytes.subarray(0, 10)));
  const short = await t.throwsAsync(readers.read(path, 40, 20));
  t.is((short as NodeJS.ErrnoException).code, 'ERANGE');
});
