/**
 * The timing of AAC made from G.711 (media/ps/g711-aac-timing.ts): where G.711 pieces go
 * in the encoder's gapless input (jitter kept end to end, holes filled with silence,
 * overlaps cut, long holes restart the encoder), which output frame plays when
 * (priming frame dropped, frame k at start + (k - 1) × 1024), how many frames the
 * encoder can have made. Then the same arithmetic against ffmpeg's real encoder
 * (ffmpeg/g711-aac.ts): a click fed at a known instant decodes at that instant.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { G711Aac } from '../../ffmpeg/g711-aac.ts';
import { liveChildCount } from '../../lib/child-process.ts';
import { adtsHeader, aacTrackFromAsc } from '../../media/codec/codec-config.ts';
import { AAC_FRAME_SAMPLES, aacFrameAt, framesAtEnd, framesReady, G711Feed, samplesFrom90k, SILENCE } from '../../media/ps/g711-aac-timing.ts';

const piece = (n: number, byte = 0x55): Buffer => Buffer.alloc(n, byte);

test('G711Feed: the first piece starts the stream; pieces within the tolerance are appended end to end', (t) => {
  const f = new G711Feed({ tolerance: 400 });
  t.deepEqual(f.place(1000, piece(160)), { restart: false, silence: 0, data: piece(160) });
  t.is(f.start, 1000);
  t.is(f.next, 1160);
  // Jitter both ways (±399 samples) does not move anything: no gap, no overlap.
  t.is(f.place(1160 + 399, piece(160)).silence, 0);
  t.is(f.place(1320 - 399, piece(160)).data.length, 160);
  t.is(f.fed, 480);
  t.is(f.next, 1480);
});

test('G711Feed: a hole is filled with silence so what follows keeps its time; an overlap is cut, a piece inside what was fed is dropped', (t) => {
  const f = new G711Feed({ tolerance: 400 });
  f.place(0, piece(160));
  // 1 s lost: 8000 - 160 samples of silence, then the piece at its own time.
  const hole = f.place(8000, piece(160));
  t.deepEqual(hole, { restart: false, silence: 7840, data: piece(160) });
  t.is(f.next, 8160);
  t.is(f.filled, 7840);
  // Stamped 500 samples early (beyond the tolerance): its first 500 overlap and are cut.
  const early = f.place(8160 - 500, Buffer.concat([piece(500, 1), piece(160, 2)]));
  t.deepEqual(early, { restart: false, silence: 0, data: piece(160, 2) });
  t.is(f.next, 8320);
  // Entirely inside what was fed: nothing is written.
  t.is(f.place(7000, piece(160)).data.length, 0);
  t.is(f.overlapped, 500 + 160);
  t.is(f.next, 8320);
});

test('G711Feed: a hole longer than maxFillSamples restarts the feed there (a new encoder); reset() starts over', (t) => {
  const f = new G711Feed({ maxFillSamples: 8000 });
  f.place(0, piece(160));
  t.is(f.place(160 + 8000, piece(160)).silence, 8000, 'a hole of exactly the limit is filled');
  const r = f.place(8320 + 8001, piece(160));
  t.deepEqual(r, { restart: true, silence: 0, data: piece(160) });
  t.is(f.start, 16_321);
  t.is(f.fed, 160);
  f.reset();
  t.is(f.next, null);
  t.false(f.place(50, piece(8)).restart, 'the first piece after a reset is a start, not a restart');
});

test('AAC frame times: the priming frame is dropped, frame k plays at start + (k - 1) × 1024; frames ready after a feed', (t) => {
  t.is(aacFrameAt(1000, 0), null);
  t.is(aacFrameAt(1000, 1), 1000);
  t.is(aacFrameAt(1000, 5), 1000 + 4 * AAC_FRAME_SAMPLES);
  // Measured on ffmpeg 5.1: 22400 samples fed → 20 frames out; 38400 → 36; at EOF 39.
  t.is(framesReady(0), 0);
  t.is(framesReady(2047), 0);
  t.is(framesReady(22_400), 20);
  t.is(framesReady(38_400), 36);
  t.is(framesAtEnd(38_400), 39);
  t.is(framesAtEnd(16_000), 17);
  t.is(framesAtEnd(0), 0);
  // 90 kHz → 8 kHz, floor.
  t.is(samplesFrom90k(0n), 0);
  t.is(samplesFrom90k(1440n), 128);
  t.is(samplesFrom90k(90_000n * 3600n * 24n * 365n), 8000 * 3600 * 24 * 365);
  t.is(samplesFrom90k(11n), 0);
});

test('G711Aac with ffmpeg: a click fed at a known instant plays at that instant (±1 ms), frames end to end; the encoder dies with stop()', async (t) => {
  const aac = new G711Aac({ ffmpegPath: 'ffmpeg' });
  t.teardown(() => aac.stop());
  const START = 4000; // the stream's first sample plays at 0.5 s
  const CLICK = 13_000; // output-timeline sample of the click (1.625 s)
  const pieces = [];
  for (let at = START; at < START + 24_000; at += 160) {
    const data = Buffer.alloc(160, SILENCE.alaw);
    if (CLICK >= at && CLICK < at + 160) for (let i = CLICK - at; i < Math.min(160, CLICK - at + 40); i++) data[i] = i % 2 ? 0xaa : 0x2a;
    pieces.push({ at, data });
  }
  aac.push(pieces);
  await aac.settle(Date.now() + 10_000);
  t.is(aac.failure, null);
  t.is(liveChildCount('ffmpeg', 'g711-aac'), 1);
  const frames = aac.take();
  t.is(frames.length, framesReady(24_000) - 1, 'every frame ready but the priming one');
  t.is(frames[0]!.at, START);
  t.true(frames.every((f, i) => f.at === START + i * AAC_FRAME_SAMPLES));

  // Decode the frames as they would be stored (ADTS again for ffmpeg) and find the click.
  const track = aacTrackFromAsc(Buffer.from([0x15, 0x88]), 2, 8000);
  const adts = Buffer.concat(frames.flatMap((f) => [adtsHeader(track, f.data.length), f.data]));
  const pcm = await new Promise<Buffer>((resolve, reject) => {
    const p = execFile(
      'ffmpeg',
      ['-v', 'error', '-f', 'aac', '-i', 'pipe:0', '-f', 's16le', 'pipe:1'],
      { encoding: 'buffer', maxBuffer: 1 << 24 },
      (err, out) => (err ? reject(new Error(`ffmpeg could not decode the AAC: ${err.message}`)) : resolve(out)),
    );
    p.stdin!.end(adts);
  });
  let loud = -1;
  for (let i = 0; i < pcm.length / 2; i++) {
    if (Math.abs(pcm.readInt16LE(i * 2)) > 2000) {
      loud = i;
      break;
    }
  }
  t.true(loud >= 0, 'the click is there');
  t.true(Math.abs(START + loud - CLICK) <= 8, `the click plays at sample ${START + loud}, fed at ${CLICK}`);

  aac.stop();
  const deadline = Date.now() + 5000;
  while (liveChildCount('ffmpeg', 'g711-aac') > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(liveChildCount('ffmpeg', 'g711-aac'), 0, 'stop() leaves no encoder');
});

test.serial('G711Aac: after our thread was held up past the deadline, frames the encoder made meanwhile are still taken', async (t) => {
  const aac = new G711Aac({ ffmpegPath: 'ffmpeg' });
  t.teardown(() => aac.stop());
  const second = (from: number): { at: number; data: Buffer }[] => {
    const out = [];
    for (let at = from; at < from + 8000; at += 160) out.push({ at, data: Buffer.alloc(160, SILENCE.alaw) });
    return out;
  };
  aac.push(second(0));
  await aac.settle(Date.now() + 10_000); // the encoder is up
  t.is(aac.failure, null);
  aac.take();
  aac.push(second(8000));
  // Our thread is busy (a GC, a long synchronous step) until after the deadline, while
  // the encoder makes the frames of what was fed and writes them into the pipe.
  const wanted = framesReady(16_000);
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    /* held up */
  }
  await aac.settle(Date.now() - 1);
  const got = aac.take().length;
  // Everything of the first second was taken already (but the priming frame, never emitted).
  t.is(got, wanted - framesReady(8000), `frames taken at the deadline: ${got}`);
  // Gone before the other tests count encoders (serial tests run first).
  aac.stop();
  const deadline = Date.now() + 5000;
  while (liveChildCount('ffmpeg', 'g711-aac') > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
});

test('G711Aac: an encoder that cannot start is a failure with its words, never an exception', async (t) => {
  const aac = new G711Aac({ ffmpegPath: '/nonexistent/ffmpeg' });
  t.teardown(() => aac.stop());
  aac.push([{ at: 0, data: piece(160) }]);
  await aac.settle(Date.now() + 5000);
  const deadline = Date.now() + 5000;
  while (aac.failure === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.regex(aac.failure ?? '', /AAC encoder.*(ENOENT|cannot start)/);
  aac.push([{ at: 160, data: piece(160) }]);
  t.deepEqual(aac.take(), []);
});
