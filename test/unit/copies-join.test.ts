/**
 * cluster/copies.ts peerJoined on a real LMDB index (the service not bound to NATS: what
 * it would publish is kept as unpublished and counted): a node not seen before is
 * announced its share of the whole history; a node that comes back after it was judged
 * dead only what closed from shortly before its death on (what closed earlier was
 * announced to it while it lived), not the whole history again.
 */
import test from 'ava';
import { CopyService, RETURN_MARGIN_MS } from '../../cluster/copies.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { segmentRecord } from '../helpers/segment-record.ts';
import { tempDir } from '../helpers/recorder.ts';

const T0 = Date.UTC(2026, 11, 1);
const HOUR = 3600_000;

function segment(startMs: number): SegmentRecord {
  return segmentRecord({ camera: 'k', startMs, endMs: startMs + 60_000, pool: 'dup', fence: { node: 'a', rev: 3 } });
}

test('a new node gets its share of all the history; a returning one only what closed since shortly before its death', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  await index.pools.put('dup', { id: 'dup', capacityBytes: null, overwrite: 'capacity', maxLockShare: 0.5, copies: 2 });
  // Ten hours of minute segments written by this node ('a').
  for (let m = 0; m < 600; m++) await index.segments.put(segment(T0 + m * 60_000));
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  /** This node's copy service, not bound to NATS, seeing `live` as the live nodes. */
  const service = (live: () => string[]): CopyService =>
    new CopyService({
      nodeId: 'a',
      prefix: 'rec',
      replicas: 1,
      index,
      dataDir: dir,
      log: silentLogger,
      signal: ac.signal,
      liveNodes: live,
      peerHttp: () => null,
      catalog: () => undefined,
      copied: () => undefined,
    });
  // Two nodes and two copies: the other node holds every segment.
  const copies = service(() => ['a', 'b']);
  t.is(await copies.peerJoined('b', null), 600, 'a node not seen before: every segment');
  const deadAt = T0 + 8 * HOUR;
  const expected = 600 - (8 * HOUR - RETURN_MARGIN_MS) / 60_000 + 1; // segments ending at or after deadAt - margin
  t.is(await copies.peerJoined('b', deadAt), expected, 'a node that came back: what closed from the margin before its death on');
  // A node judged dead again during the walk: it stops.
  let asked = 0;
  const flaky = service(() => (++asked > 1 ? ['a'] : ['a', 'b']));
  t.true((await flaky.peerJoined('b', null)) < 600, 'the walk stopped once the node was gone');
});
