import test from 'ava';
import { copyHolders, heldByDead, segmentKey } from '../../cluster/copy-plan.ts';
import { recordFromWire, recordToWire } from '../../cluster/copies.ts';
import type { SegmentRecord } from '../../index/records.ts';

const NODES = ['a', 'b', 'c', 'd', 'e'];
const keys = Array.from({ length: 2000 }, (_, i) => segmentKey(`cam${i % 20}`, 1_700_000_000_000 + i * 2000));

test('the writer holds its segment first; the others follow by rendezvous weight, copies in all, never twice', (t) => {
  for (const key of keys.slice(0, 200)) {
    const h = copyHolders(key, 'c', NODES, 3);
    t.is(h.length, 3);
    t.is(h[0], 'c');
    t.is(new Set(h).size, 3);
    // The same view gives the same answer on every node, whatever the order of its list.
    t.deepEqual(copyHolders(key, 'c', [...NODES].reverse(), 3), h);
  }
  t.deepEqual(copyHolders(keys[0]!, 'a', ['a'], 3), ['a'], 'fewer nodes than copies: what there is');
  t.deepEqual(copyHolders(keys[0]!, 'a', NODES, 1), ['a'], 'copies 1: the writer alone');
  t.false(copyHolders(keys[0]!, 'z', NODES, 2).includes('z'), 'a writer that is not alive is not chosen');
  t.is(copyHolders(keys[0]!, 'z', NODES, 2).length, 2);
});

test('copies spread evenly over the other nodes', (t) => {
  const count = new Map<string, number>();
  for (const key of keys) {
    const second = copyHolders(key, 'a', NODES, 2)[1]!;
    count.set(second, (count.get(second) ?? 0) + 1);
  }
  t.deepEqual([...count.keys()].sort(), ['b', 'c', 'd', 'e']);
  // 2000 segments over 4 nodes: 500 each expected; a fair hash stays within 20 %.
  for (const [node, n] of count) t.true(n > 400 && n < 600, `${node}: ${n}`);
});

test('a node dying moves only the segments it held, each to the next node of its own ranking', (t) => {
  let moved = 0;
  for (const key of keys) {
    const before = copyHolders(key, 'a', NODES, 2);
    const after = copyHolders(
      key,
      'a',
      NODES.filter((n) => n !== 'd'),
      2,
    );
    const held = heldByDead(
      key,
      'a',
      NODES.filter((n) => n !== 'd'),
      'd',
      2,
    );
    t.is(held, before.includes('d'));
    if (!before.includes('d')) t.deepEqual(after, before, 'a segment d did not hold keeps its holders');
    else {
      moved++;
      t.is(after[0], 'a');
      t.false(after.includes('d'));
    }
  }
  t.true(moved > 300 && moved < 700, `${moved} of ${keys.length} moved (about a quarter)`);
  // The writer dead: its segments are held by the first two of the others' ranking.
  const h = copyHolders(keys[5]!, 'a', ['b', 'c', 'd', 'e'], 2);
  t.is(h.length, 2);
  t.false(h.includes('a'));
});

test('a segment record survives the wire (its GOP table in base64)', (t) => {
  const seg: SegmentRecord = {
    camera: 'k1',
    startMs: 1_700_000_000_000,
    endMs: 1_700_000_002_000,
    file: 'pools/dup/k1/2023-11-14/1700000000000.mp4',
    format: 'mp4',
    pool: 'dup',
    stream: 'main',
    bytes: 12345,
    initSize: 700,
    mimeType: 'video/mp4; codecs="avc1.64001e"',
    codecKey: 'x',
    types: [{ type: 'timing', fromMs: 1_700_000_000_000 }],
    gops: new Uint8Array([1, 2, 3, 250, 0, 7]),
    open: false,
    flags: {},
    fence: { node: 'a', rev: 9 },
  };
  const wire = JSON.parse(JSON.stringify(recordToWire(seg))) as ReturnType<typeof recordToWire>;
  t.deepEqual(recordFromWire(wire), seg);
});
