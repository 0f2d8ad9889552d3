/**
 * lib/secret-box.ts on real files: a key file is made on first use (32 bytes, mode 0600)
 * and the same key is read back after; sealed values open to the clear one and differ
 * each time; a changed value, or one sealed under another key file, is SECRET_UNREADABLE,
 * never garbage; a key file of the wrong size is CONFIG_INVALID; two boxes opened at
 * once on a missing file end with one key (neither replaces the other's file).
 */
import test from 'ava';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RecorderError } from '../../lib/errors.ts';
import { isSealed, SecretBox } from '../../lib/secret-box.ts';
import { tempDir } from '../helpers/recorder.ts';

test('a key file made on first use seals and opens; the sealed form changes each time', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'secret.key');
  const box = await SecretBox.open(path);
  const info = await stat(path);
  t.is(info.size, 32);
  t.is(info.mode & 0o777, 0o600);
  const a = box.seal('wJalrXUtnFEMI/K7MDENG');
  const b = box.seal('wJalrXUtnFEMI/K7MDENG');
  t.true(isSealed(a));
  t.not(a, b, 'a fresh IV each time');
  t.false(a.includes('wJalrXUtnFEMI'));
  const again = await SecretBox.open(path);
  t.is(again.unseal(a), 'wJalrXUtnFEMI/K7MDENG', 'the same key read back');
  t.is(again.unseal(again.seal('')), '');
});

test('a changed value or another key file is SECRET_UNREADABLE; a wrong key file CONFIG_INVALID', async (t) => {
  const dir = await tempDir(t);
  const box = await SecretBox.open(join(dir, 'one.key'));
  const other = await SecretBox.open(join(dir, 'two.key'));
  const sealed = box.seal('the secret');
  const code = (f: () => unknown): string | undefined => {
    const err = t.throws(f);
    return err instanceof RecorderError ? err.code : undefined;
  };
  t.is(
    code(() => other.unseal(sealed)),
    'SECRET_UNREADABLE',
  );
  const raw = Buffer.from(sealed.slice('sealed:v1:'.length), 'base64');
  raw[raw.length - 1]! ^= 1;
  t.is(
    code(() => box.unseal(`sealed:v1:${raw.toString('base64')}`)),
    'SECRET_UNREADABLE',
  );
  t.is(
    code(() => box.unseal('sealed:v1:AAAA')),
    'SECRET_UNREADABLE',
  );
  t.is(
    code(() => box.unseal('in clear')),
    'SECRET_UNREADABLE',
  );
  await writeFile(join(dir, 'short.key'), Buffer.alloc(16));
  const err = await t.throwsAsync(SecretBox.open(join(dir, 'short.key')));
  t.is((err as RecorderError).code, 'CONFIG_INVALID');
});

test('boxes opened at once on a missing key file share one key', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'secret.key');
  const boxes = await Promise.all(Array.from({ length: 8 }, () => SecretBox.open(path)));
  const sealed = boxes[0]!.seal('shared');
  for (const box of boxes) t.is(box.unseal(sealed), 'shared');
  t.is((await stat(path)).size, 32);
});

test('boxes derived from one shared secret open each other’s values; another secret or purpose does not', (t) => {
  const a = SecretBox.derived('the cluster token', 's3-access-keys');
  const b = SecretBox.derived('the cluster token', 's3-access-keys');
  const sealed = a.seal('wJalrXUtnFEMI');
  t.is(b.unseal(sealed), 'wJalrXUtnFEMI');
  t.throws(() => SecretBox.derived('another token', 's3-access-keys').unseal(sealed), { instanceOf: RecorderError, message: /does not open/ });
  t.throws(() => SecretBox.derived('the cluster token', 'another purpose').unseal(sealed), { instanceOf: RecorderError });
});
