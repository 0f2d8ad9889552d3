/**
 * The live fan-out's per-viewer queue policy (live/live-fanout.ts), without I/O:
 * one message in flight, a bounded backlog dropped to the next keyframe, init and
 * status messages never dropped, a joining viewer starting at init + newest GOP.
 */
import test from 'ava';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import type { InitInfo } from '../../media/mp4/init-info.ts';
import type { MoofInfo } from '../../media/mp4/moof.ts';
import { LiveChannel, type LiveMessage } from '../../live/live-fanout.ts';

const info: InitInfo = { tracks: [], videoTrackId: 1, mimeType: 'video/mp4; codecs="avc1.4d401e"', codecKey: 'k', trexDefaults: new Map() };
const init: Fmp4Chunk = { kind: 'init', bytes: Buffer.from('init'), info };
let seq = 0;
function frag(size: number, keyframe = true): Fmp4Chunk {
  const bytes = Buffer.alloc(size, seq++ % 256);
  return { kind: 'fragment', bytes, moofSize: 8, moof: {} as MoofInfo, durationTicks: 90_000, timescale: 90_000, keyframe };
}

/** A sink that records deliveries and completes them only when told. */
function manualSink(): { got: LiveMessage[]; pending: (() => void)[]; sink: { deliver(m: LiveMessage, done: () => void): void } } {
  const got: LiveMessage[] = [];
  const pending: (() => void)[] = [];
  return { got, pending, sink: { deliver: (m, done) => (got.push(m), pending.push(done)) } };
}

test('a viewer that never completes holds at most its bound, then skips to the next keyframe', (t) => {
  const ch = new LiveChannel();
  ch.publish(init);
  const s = manualSink();
  const v = ch.subscribe(s.sink, 1000);
  t.is(s.got.length, 1); // init in flight
  for (let i = 0; i < 100; i++) ch.publish(frag(300));
  const st = v.stats();
  t.true(st.queuedBytes <= 1000, `${st.queuedBytes}`);
  t.true(st.droppedFragments > 90);
  t.true(st.skips > 20);
  t.true(st.inFlight);
  t.is(s.got.length, 1);
});

test('after a skip, fragments that do not start with a keyframe are dropped until one does', (t) => {
  const ch = new LiveChannel();
  ch.publish(init);
  const s = manualSink();
  const v = ch.subscribe(s.sink, 500);
  ch.publish(frag(400)); // queued
  ch.publish(frag(400, false)); // overflows: backlog dropped, waits for a keyframe
  ch.publish(frag(100, false)); // still waiting
  const k = frag(100, true);
  ch.publish(k);
  // Complete deliveries: init, then only the keyframe fragment.
  while (s.pending.length) s.pending.shift()!();
  t.deepEqual(
    s.got.map((m) => m.kind),
    ['init', 'fragment'],
  );
  t.is((s.got[1] as { bytes: Buffer }).bytes, (k as { bytes: Buffer }).bytes);
  t.is(v.stats().droppedFragments, 3);
});

test('init and status messages are never dropped; a joining viewer gets init and the newest GOP', (t) => {
  const ch = new LiveChannel();
  const early = manualSink();
  ch.subscribe(early.sink, 100);
  ch.publish(frag(10)); // before any init: not playable, not sent
  t.is(early.got.length, 0);
  ch.publish(init);
  ch.publish(frag(50));
  const newest = frag(60);
  ch.publish(newest);
  ch.publish(frag(70, false));
  const late = manualSink();
  ch.subscribe(late.sink, 100);
  while (late.pending.length) late.pending.shift()!();
  t.deepEqual(
    late.got.map((m) => m.kind),
    ['init', 'fragment'],
  );
  t.is((late.got[1] as { bytes: Buffer }).bytes, (newest as { bytes: Buffer }).bytes);

  ch.ended('camera offline');
  ch.publish(init);
  for (let i = 0; i < 10; i++) ch.publish(frag(90));
  while (early.pending.length) early.pending.shift()!();
  const kinds = early.got.map((m) => m.kind);
  t.is(kinds.filter((k) => k === 'init').length, 2);
  t.is(kinds.filter((k) => k === 'ended').length, 1);
});

test('closing the channel: viewers get `closed` last, are unsubscribed and their backlog freed', (t) => {
  const ch = new LiveChannel();
  ch.publish(init);
  const s = manualSink();
  const v = ch.subscribe(s.sink, 10_000);
  for (let i = 0; i < 5; i++) ch.publish(frag(100));
  let idle = 0;
  ch.onIdle = () => idle++;
  ch.close('camera removed');
  t.true(v.isClosed);
  t.is(ch.viewerCount, 0);
  t.is(idle, 1);
  t.is(v.stats().queuedBytes, 0);
  ch.publish(frag(100));
  while (s.pending.length) s.pending.shift()!();
  t.deepEqual(
    s.got.map((m) => m.kind),
    ['init', 'closed'],
  );
  // A viewer joining a closed channel is told at once.
  const late = manualSink();
  ch.subscribe(late.sink);
  t.deepEqual(
    late.got.map((m) => m.kind),
    ['closed'],
  );
});

test('a viewer that leaves frees its queue and stops receiving', (t) => {
  const ch = new LiveChannel();
  ch.publish(init);
  const s = manualSink();
  const v = ch.subscribe(s.sink, 10_000);
  ch.publish(frag(100));
  v.close();
  ch.publish(frag(100));
  while (s.pending.length) s.pending.shift()!();
  t.deepEqual(
    s.got.map((m) => m.kind),
    ['init'],
  );
  t.is(ch.viewerCount, 0);
});
