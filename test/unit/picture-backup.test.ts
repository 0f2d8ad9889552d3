/**
 * The pure pieces of picture backup to another cluster (cluster/picture-backup.ts): the
 * grant opens one pack of one node and nothing else, the announcement names the target's
 * pool and no holders, and the walk sends what the target has not acknowledged and moves
 * the cursor only over packs that are done.
 */
import test from 'ava';
import { backupGrant, picturePackAllowed, picturePackGrant } from '../../cluster/copies.ts';
import { backupAnnouncement, extentOf, pictureCursorKey, planPictureBackup } from '../../cluster/picture-backup.ts';
import type { PackRecord } from '../../index/pictures.ts';

const TOKEN = 'a'.repeat(64);

test('a picture pack grant opens that pack of that node only, never with another token, and never a segment', (t) => {
  const g = picturePackGrant(TOKEN, 'nvr1', 7);
  t.regex(g, /^[0-9a-f]{64}$/);
  t.is(g, picturePackGrant(TOKEN, 'nvr1', 7), 'the same for the same pack');
  t.true(picturePackAllowed(TOKEN, undefined, g, 'nvr1', 7));
  t.false(picturePackAllowed(TOKEN, undefined, g, 'nvr1', 8), 'another pack of the node');
  t.false(picturePackAllowed(TOKEN, undefined, g, 'nvr2', 7), 'the same pack id of another node');
  t.false(picturePackAllowed(TOKEN, undefined, g, 'nvr1', 70), 'no prefix match');
  t.false(picturePackAllowed('b'.repeat(64), undefined, g, 'nvr1', 7), 'a grant of another cluster');
  t.false(picturePackAllowed(null, TOKEN, g, 'nvr1', 7), 'outside a cluster nothing is');
  t.false(picturePackAllowed(TOKEN, undefined, undefined, 'nvr1', 7), 'nothing shown');
  t.false(picturePackAllowed(TOKEN, g, undefined, 'nvr1', 7), 'a grant is not the token');
  t.true(picturePackAllowed(TOKEN, TOKEN, undefined, 'nvr1', 7), 'a peer with the token');
  // Its own namespace: a segment grant of a camera named like a node never opens a pack, nor the other way.
  t.not(g, backupGrant(TOKEN, 'nvr1', 7));
  t.false(picturePackAllowed(TOKEN, undefined, backupGrant(TOKEN, 'nvr1', 7), 'nvr1', 7));
});

test('the announcement to a target names its pool, no holders, and the grant of the pack', (t) => {
  const a = backupAnnouncement({ id: 3, bytes: 4096, closed: false }, { nodeId: 'nvr1', http: 'http://10.0.0.1:8080', token: TOKEN, targetPool: 'vault' });
  t.deepEqual(a, {
    origin: 'nvr1',
    pack: 3,
    pool: 'vault',
    to: 4096,
    closed: false,
    source: 'nvr1',
    holders: [],
    backup: { http: 'http://10.0.0.1:8080', grant: picturePackGrant(TOKEN, 'nvr1', 3) },
  });
  t.is(pictureCursorKey('yard', 'nvr.1'), 'pictures.yard.nvr=2e1.packs', 'KV-safe key, dots of a node id escaped');
});

function pack(id: number, p: Partial<PackRecord> = {}): PackRecord {
  return { id, pool: 'yard', file: `pictures/yard/${id}.pack`, bytes: 100 * id, count: 1, createdMs: 0, closed: true, range: [0, 1], ...p };
}

test('the walk sends what the target did not acknowledge; the cursor passes only packs that are done', (t) => {
  const packs = [
    pack(1),
    pack(2, { pool: 'other' }),
    pack(3, { copyOf: { node: 'peer', pack: 9, start: 0, head: 64 } }),
    pack(4, { count: 0 }),
    pack(5),
    pack(6, { closed: false }),
    pack(7),
  ];
  const none = planPictureBackup('yard', 0, packs, new Map());
  t.deepEqual(
    none.send.map((p) => p.id),
    [1, 5, 6, 7],
    'own packs of the pool with pictures: not another pool’s, not a copy, not an empty one',
  );
  t.is(none.cursor(new Set()), 0, 'nothing acknowledged: the cursor stays');
  t.is(none.cursor(new Set([1])), 4, 'pack 1 taken: the cursor passes it and what is not ours or empty');
  t.is(none.cursor(new Set([1, 5, 6, 7])), 5, 'an open pack holds the cursor, whatever follows it');

  // After a round: what the target took is not announced again until it changes.
  const acked = new Map([
    [1, extentOf(pack(1))],
    [5, extentOf(pack(5))],
    [6, extentOf(pack(6, { closed: false }))],
    [7, extentOf(pack(7))],
  ]);
  t.deepEqual(
    planPictureBackup('yard', 0, packs, acked).send.map((p) => p.id),
    [],
  );
  const grown = packs.map((p) => (p.id === 6 ? { ...p, bytes: 900 } : p));
  t.deepEqual(
    planPictureBackup('yard', 0, grown, acked).send.map((p) => p.id),
    [6],
    'the open pack grew: announced again',
  );
  const closed = packs.map((p) => (p.id === 6 ? { ...p, closed: true } : p));
  const plan = planPictureBackup('yard', 0, closed, acked);
  t.deepEqual(
    plan.send.map((p) => p.id),
    [6],
    'its close is announced',
  );
  t.is(plan.cursor(new Set([6])), 7, 'all closed and taken: the cursor reaches the last');
  t.is(planPictureBackup('yard', 0, [pack(1, { covering: true })], new Map()).cursor(new Set()), 1, 'a pack being covered has nothing left to send');
});
