/**
 * The index's reserve on a real file system (storage/index-reserve.ts): the tail is
 * topped up only under half its size, and a released reserve file's space goes to the
 * tail at once, on top of what it holds, so the segment writer's retry cannot take it
 * before the full-disk episode's commits need it (a clean-clone CI run saw the tail run
 * out with the space still free on the disk).
 */
import test from 'ava';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexReserve } from '../../storage/index-reserve.ts';

const BYTES = 256 * 1024;

async function fresh(): Promise<{ dir: string; reserve: IndexReserve; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'index-reserve-'));
  await mkdir(join(dir, 'index'));
  await writeFile(join(dir, 'index', 'data.mdb'), Buffer.alloc(64 * 1024, 1));
  return { dir, reserve: new IndexReserve(dir, BYTES), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

test('ensure writes the file and allocates the tail; a tail over half is left as it is', async (t) => {
  const { dir, reserve, cleanup } = await fresh();
  t.teardown(cleanup);
  t.is(await reserve.bytes(), BYTES);
  t.true(await reserve.ensure());
  t.is((await stat(join(dir, 'index.reserve'))).size, BYTES);
  t.true(reserve.tailKept, 'fallocate works on the test machine');
  const tail = await reserve.tail();
  t.true(tail >= BYTES && tail < BYTES + 8192, `tail ${tail}`);
  t.is((await stat(join(dir, 'index', 'data.mdb'))).size, 64 * 1024, 'the index file keeps its size: LMDB does not see the tail');
  t.is(await reserve.shortBytes(), 0);
  t.is(await reserve.topUpTail(), tail, 'nothing to top up');
});

test('release deletes the file and gives its space to the tail on top of what the tail holds', async (t) => {
  const { dir, reserve, cleanup } = await fresh();
  t.teardown(cleanup);
  await reserve.ensure();
  const before = await reserve.tail();
  t.true(await reserve.release(), 'there was a file to free');
  t.false(await reserve.present());
  await t.throwsAsync(stat(join(dir, 'index.reserve')), { code: 'ENOENT' });
  const after = await reserve.tail();
  t.true(after >= before + BYTES - 8192, `the tail grew by the file's size: ${before} -> ${after}`);
  t.true(after <= 2 * BYTES + 8192, `at most twice the reserve: ${after}`);
  t.is(await reserve.shortBytes(), BYTES, 'what it lacks is the file');
  t.false(await reserve.release(), 'a second release frees nothing');
  t.is(await reserve.tail(), after, 'and does not grow the tail again');
});
