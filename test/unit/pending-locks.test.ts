/**
 * Lock changes noted for pictures not here yet (pictures/pending-locks.ts): a lock asked
 * while the picture's copy was in flight was answered "not found" and lost on that copy.
 */
import test from 'ava';
import type { CopiedLock, PictureKey } from '../../index/pictures.ts';
import { PendingLocks } from '../../pictures/pending-locks.ts';

const k = (seq: number): PictureKey => ['gate', 1000, seq];

test('a noted lock is applied over the range’s locks to the copy that lands, once', (t) => {
  const p = new PendingLocks();
  p.note(k(0), { unlock: false, untilMs: null }, 0);
  p.note(k(1), { unlock: true }, 0);
  const carried: CopiedLock[] = [
    ['gate', 1000, 1, 5000],
    ['gate', 1000, 2, null],
  ];
  const merged = p.merge([k(0), k(1), k(2)], carried, 10);
  t.deepEqual(
    merged.sort((a, b) => a[2] - b[2]),
    [
      ['gate', 1000, 0, null],
      ['gate', 1000, 2, null],
    ],
    'the lock added, the unlock applied, the rest as carried',
  );
  t.is(p.size, 2, 'kept until the commit is done');
  p.forget([k(0), k(1), k(2)]);
  t.is(p.size, 0, 'forgotten once committed');
  t.deepEqual(p.merge([k(0)], [], 20), [], 'and not applied twice');
});

test('the latest change per picture wins; notes expire and are bounded', (t) => {
  const p = new PendingLocks(1000, 3);
  p.note(k(0), { unlock: false, untilMs: 9 }, 0);
  p.note(k(0), { unlock: true }, 1);
  t.deepEqual(p.merge([k(0)], [['gate', 1000, 0, 9]], 2), [], 'the unlock after the lock wins');
  p.forget([k(0)]);
  p.note(k(1), { unlock: false, untilMs: null }, 0);
  t.deepEqual(p.merge([k(1)], [], 1001), [], 'a note older than its ttl is dropped');
  for (let i = 0; i < 5; i++) p.note(k(10 + i), { unlock: false, untilMs: null }, 2000);
  t.is(p.size, 3, 'at most max notes, the oldest dropped');
  t.deepEqual(p.merge([k(10), k(14)], [], 2001), [['gate', 1000, 14, null]]);
});
