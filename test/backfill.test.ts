/**
 * Back-fill from a camera's edge storage (issue 6) through real processes: the
 * simulated camera records its live video to an "SD card" (sim/edge_sd.py) and replays
 * it over ONVIF (`Range: clock=`, `Rate-Control: no`); the network between recorder
 * and camera is a TCP forwarder the test cuts.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SimCamera, freePort } from '../sim/camera.ts';
import { decodeErrors, ffprobe, nonIncreasingDts } from './helpers/media.ts';
import { clockDiffSeconds, readClockSeconds, secondsOfDayUtc } from './helpers/ocr.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';
import { TcpCut } from './helpers/tcp-cut.ts';

interface Gap {
  from: string;
  to: string;
  state: string;
  attempts: number;
  error?: { code: string; message: string };
}
interface SearchBody {
  spans: { from: string; to: string; types: { type: string; from: string; to: string }[] }[];
  gaps: Gap[];
}

const GOP_S = 2;
const iso = (ms: number): string => new Date(ms).toISOString();

async function search(http: string, camera: string, fromMs: number, toMs: number): Promise<SearchBody> {
  const q = new URLSearchParams({ camera, from: iso(fromMs), to: iso(toMs) });
  const { status, body } = await getJson<SearchBody>(`${http}/api/recordings?${q.toString()}`);
  if (status !== 200) throw new Error(`search ${status}`);
  return body;
}

async function cameraState(n: TestNode, id: string): Promise<string> {
  const { body } = await getJson<{ camera: { status: string } }>(`${n.http}/api/cameras/${id}`);
  return body.camera.status;
}

async function postJson(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> & { error?: { code: string } } }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { error?: { code: string } } };
}

/** Every stored segment of a camera, in order, must not overlap the next. */
function overlaps(n: TestNode, camera: string): string[] {
  const segs = [...n.node.index.segments.all(camera)];
  const bad: string[] = [];
  for (let i = 1; i < segs.length; i++)
    if (segs[i]!.startMs < segs[i - 1]!.endMs) bad.push(`${segs[i - 1]!.startMs}-${segs[i - 1]!.endMs} / ${segs[i]!.startMs}`);
  return bad;
}

const settings = { backfillDelayMs: 3000, backfillRetryMs: 3000, backfillMaxAttempts: 6, backoffMaxMs: 2000, ingestTimeoutMs: 4000 };

test.serial('a camera gone for 20 s is back-filled from its SD card: one span with a backfill run, playable, clocks match', async (t) => {
  const sd = await tempDir(t, 'sd-');
  const sim = await SimCamera.start({ sd });
  t.teardown(() => sim.stop());
  const net = await TcpCut.start(t, sim.port);
  const n = await startNode(t, settings);
  const progress: { state: string }[] = [];
  const sub = n.nc.subscribe('rec.v1.backfill.cam');
  void (async () => {
    for await (const m of sub) progress.push(JSON.parse(m.string()) as { state: string });
  })();
  const t0 = Date.now();
  const put = await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: net.url('sdlive') }, edge: { replayUrl: net.url('edge') } });
  t.true(put.ok, JSON.stringify(put.error));
  await waitFor('recording', async () => (await cameraState(n, 'cam')) === 'recording', 60_000);
  await new Promise((r) => setTimeout(r, 8000));

  await net.cut();
  const cutAt = Date.now();
  const during = await waitFor('an open gap', async () => (await search(n.http, 'cam', t0, Date.now())).gaps.find((g) => g.state === 'open'), 30_000);
  t.truthy(during);
  await new Promise((r) => setTimeout(r, Math.max(0, 20_000 - (Date.now() - cutAt))));
  await net.restore();

  const filled = await waitFor(
    'the gap filled',
    async () => {
      const r = await search(n.http, 'cam', t0, Date.now());
      return r.gaps.length > 0 && r.gaps.every((g) => g.state === 'filled') && r.spans.length === 1 ? r : null;
    },
    120_000,
    1000,
  );
  const span = filled.spans[0]!;
  const backfillRun = span.types.find((r) => r.type === 'backfill');
  t.truthy(backfillRun, JSON.stringify(filled));
  const gapMs = filled.gaps.reduce((s, g) => s + Date.parse(g.to) - Date.parse(g.from), 0);
  t.true(gapMs > 15_000, `the gap covered the outage (${gapMs} ms)`);
  t.true(Date.parse(backfillRun!.to) - Date.parse(backfillRun!.from) > 15_000, 'the backfill run covers the outage');
  t.deepEqual(overlaps(n, 'cam'), [], 'back-filled video never overlaps stored video');
  const bf = [...n.node.index.segments.all('cam')].filter((s) => s.flags.backfill);
  t.true(bf.length > 0 && bf.every((s) => s.types.every((r) => r.type === 'backfill')));
  // Progress is published after the ledger is written, and goes through the nats-server
  // while the search above came straight over HTTP: the last event can trail the search.
  const published = (): boolean => progress.some((p) => p.state === 'fetching') && progress.some((p) => p.state === 'filled');
  await waitFor('fetching and filled progress on NATS', published, 10_000).catch(() => undefined);
  t.true(published(), JSON.stringify(progress));

  // The downloaded range across the gap plays, with about its length.
  const gapFrom = Date.parse(filled.gaps[0]!.from);
  const gapTo = Date.parse(filled.gaps[filled.gaps.length - 1]!.to);
  const q = new URLSearchParams({ from: iso(gapFrom - 4000), to: iso(gapTo + 4000) });
  const res = await fetch(`${n.http}/api/cameras/cam/video.mp4?${q.toString()}`);
  t.is(res.status, 200);
  const dir = await tempDir(t, 'dl-');
  const file = join(dir, 'across.mp4');
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  const probe = await ffprobe(file);
  const want = (gapTo - gapFrom + 8000) / 1000;
  t.true(Math.abs(probe.durationSec - want) <= 2 * GOP_S, `duration ${probe.durationSec} s, range ${want} s`);
  // Every frame decodes. ffmpeg's null muxer also notes where a session's first sample
  // is 1 tick long (ffmpeg's RTSP ingest writes it so at every session start, live or
  // back-filled); decode times must still increase strictly.
  const errors = (await decodeErrors(file)).split('\n').filter((l) => l.trim() !== '' && !l.includes('non monotonically increasing dts to muxer'));
  t.deepEqual(errors, []);
  t.deepEqual(await nonIncreasingDts(file), []);

  // The clock burnt into back-filled I-frames matches their index times (one GOP + the overlay's second).
  // Tesseract sometimes misreads an hour digit (14 as 04 or 03: whole hours off), so
  // minutes and seconds are compared (a back-fill timed wrong by whole hours is caught by
  // the span checks above); one frame in the lot may still disagree, every other one
  // must match, and at least two.
  const readings: string[] = [];
  let matched = 0;
  for (let at = Date.parse(backfillRun!.from) + 500; at < Date.parse(backfillRun!.to); at += 3000) {
    const frame = await fetch(`${n.http}/api/cameras/cam/frame.jpg?at=${at}`);
    t.is(frame.status, 200);
    const frameMs = Date.parse(frame.headers.get('x-frame-time')!);
    const jpg = join(dir, `f${at}.jpg`);
    await writeFile(jpg, Buffer.from(await frame.arrayBuffer()));
    const clock = await readClockSeconds(jpg);
    if (clock === null) continue; // OCR may miss a frame; enough others are checked
    const diff = (((clockDiffSeconds(clock, secondsOfDayUtc(frameMs)) % 3600) + 5400) % 3600) - 1800;
    readings.push(`${iso(frameMs)}: overlay ${clock} s of day, ${diff} s off`);
    if (Math.abs(diff) <= GOP_S + 1) matched++;
  }
  t.true(matched >= 2 && matched >= readings.length - 1, `back-filled frames whose overlay matches their index time: ${readings.join('; ')}`);
});

test.serial('a recorder that was down finds its own gap at start (last segment to now) and fills it from the SD card', async (t) => {
  const sd = await tempDir(t, 'sd-');
  const sim = await SimCamera.start({ sd });
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const first = await startNode(t, settings, dataDir);
  t.true((await first.request('rec.v1.camera.put', { id: 'down', streams: { main: sim.url('sdlive') }, edge: { replayUrl: sim.url('edge') } })).ok);
  await waitFor('recording', async () => (await cameraState(first, 'down')) === 'recording', 60_000);
  await new Promise((r) => setTimeout(r, 6000));
  // 'recording' comes with the first GOP; the index holds an open segment only from the
  // writer's first sync (~4 s of media), which a loaded machine can push past the wait.
  const t0 = (await waitFor('a segment in the index', () => [...first.node.index.segments.all('down')][0], 30_000)).startMs;
  await first.node.stop();
  await new Promise((r) => setTimeout(r, 12_000)); // the recorder is down; the card records

  const n = await startNode(t, settings, dataDir);
  const atStart = await search(n.http, 'down', t0, Date.now());
  const own = atStart.gaps.find((g) => g.state !== 'open');
  t.truthy(own, `a gap from before the start: ${JSON.stringify(atStart.gaps)}`);
  t.true(Date.parse(own!.to) - Date.parse(own!.from) > 10_000);
  const filled = await waitFor(
    'the gaps filled',
    async () => {
      const r = await search(n.http, 'down', t0, Date.now() - 5000);
      return r.gaps.length > 0 && r.gaps.every((g) => g.state === 'filled') && r.spans.length === 1 ? r : null;
    },
    120_000,
    1000,
  );
  void filled;
  // The whole outage as stored now (the search above ends 5 s before now and may cut the run).
  const whole = await search(n.http, 'down', t0, Date.now());
  // Most of the recorder's own gap is back-filled (its edges are trimmed to whole fragments).
  const ownMs = Date.parse(own!.to) - Date.parse(own!.from);
  t.truthy(
    whole.spans[0]!.types.find((r) => r.type === 'backfill' && Date.parse(r.to) - Date.parse(r.from) > 0.8 * ownMs),
    `${ownMs} ms gap: ${JSON.stringify(whole.spans)}`,
  );
  t.deepEqual(overlaps(n, 'down'), []);
});

test.serial('a manual back-fill fetches a range from before recording began, clipped at stored video', async (t) => {
  const sd = await tempDir(t, 'sd-');
  const sim = await SimCamera.start({ sd });
  t.teardown(() => sim.stop());
  const simStart = Date.now();
  await new Promise((r) => setTimeout(r, 14_000)); // the SD card records before the recorder knows the camera
  const n = await startNode(t, settings);
  t.true((await n.request('rec.v1.camera.put', { id: 'man', streams: { main: sim.url('sdlive') }, edge: { replayUrl: sim.url('edge') } })).ok);
  const first = await waitFor('live video', () => n.node.index.segments.last('man'), 60_000);
  const liveStart = [...n.node.index.segments.all('man')][0]!.startMs;
  void first;
  await new Promise((r) => setTimeout(r, 4000));

  // Over HTTP: from the card's start to past the start of live video.
  const from = simStart + 3000;
  const to = liveStart + 3000;
  const reply = await postJson(`${n.http}/api/cameras/man/backfill`, { from: iso(from), to: iso(to) });
  t.is(reply.status, 202, JSON.stringify(reply.body));
  const asked = reply.body.gaps as Gap[];
  t.is(asked.length, 1);
  t.is(Date.parse(asked[0]!.to), liveStart, 'the hole ends where stored video starts');

  const done = await waitFor(
    'the range filled',
    async () => {
      const r = await search(n.http, 'man', from, to);
      return r.gaps.length > 0 && r.gaps.every((g) => g.state === 'filled') ? r : null;
    },
    90_000,
    1000,
  );
  t.is(done.spans.length, 1, JSON.stringify(done.spans));
  const run = done.spans[0]!.types[0]!;
  t.is(run.type, 'backfill');
  t.true(Date.parse(run.from) - from <= GOP_S * 1000, `back-fill starts within a GOP of the range (${run.from})`);
  t.deepEqual(overlaps(n, 'man'), []);

  // Over NATS: a range that is all stored video has nothing to fetch.
  const last = n.node.index.segments.last('man')!;
  const none = await n.request<{ gaps: Gap[] }>('rec.v1.backfill', { camera: 'man', from: liveStart + 500, to: last.endMs - 500 });
  t.true(none.ok, JSON.stringify(none.error));
  t.deepEqual(none.gaps, []);
});

test.serial('edge storage that refuses, answers another interval, streams forever or is unreachable: typed error, gap stays visible, alarm', async (t) => {
  const sd = await tempDir(t, 'sd-');
  const sim = await SimCamera.start({ sd });
  t.teardown(() => sim.stop());
  const simStart = Date.now();
  await new Promise((r) => setTimeout(r, 12_000));
  const n = await startNode(t, { ...settings, backfillMaxAttempts: 2, backfillRetryMs: 1000 });
  const alarms: { camera: string; message: string }[] = [];
  const sub = n.nc.subscribe('rec.v1.alarm.backfill-failed');
  void (async () => {
    for await (const m of sub) alarms.push(JSON.parse(m.string()) as { camera: string; message: string });
  })();
  const deadPort = await freePort();
  const cases = [
    { id: 'refused', edge: { replayUrl: sim.url('sdlive') }, code: 'EDGE_REFUSED' },
    { id: 'skewed', edge: { replayUrl: sim.url('edge-skewed') }, code: 'EDGE_WRONG_INTERVAL' },
    { id: 'forever', edge: { replayUrl: `${sim.url('sdlive')}?starttime={start}&endtime={end}`, mode: 'url' }, code: 'EDGE_OVERRUN' },
    { id: 'gone', edge: { replayUrl: `rtsp://127.0.0.1:${deadPort}/edge` }, code: 'EDGE_UNREACHABLE' },
  ];
  const from = simStart + 2000;
  const to = simStart + 6000;
  for (const c of cases) {
    // No slot and no live stream: the camera records nothing itself (the whole range is
    // a hole) and puts no load on the simulated camera.
    t.true((await n.request('rec.v1.camera.put', { id: c.id, streams: { main: `rtsp://127.0.0.1:${deadPort}/live` }, edge: c.edge })).ok, c.id);
    t.true((await n.request('rec.v1.schedule.put', { camera: c.id, slots: [] })).ok);
    const r = await n.request<{ gaps: Gap[] }>('rec.v1.backfill', { camera: c.id, from, to });
    t.true(r.ok, JSON.stringify(r.error));
    t.is(r.gaps.length, 1);
  }
  for (const c of cases) {
    const given = await waitFor(
      `${c.id} given up`,
      async () => {
        const r = await search(n.http, c.id, from, to);
        return r.gaps.length === 1 && r.gaps[0]!.state === 'unavailable' ? r : null;
      },
      120_000,
      1000,
    );
    const gap = given.gaps[0]!;
    t.is(gap.error?.code, c.code, `${c.id}: ${JSON.stringify(gap.error)}`);
    t.is(gap.attempts, 2);
    t.is(Date.parse(gap.from), from);
    t.is(Date.parse(gap.to), to);
    t.deepEqual(given.spans, [], `${c.id}: nothing was written`);
    t.is([...n.node.index.segments.all(c.id)].filter((s) => s.flags.backfill).length, 0);
  }
  await waitFor('one alarm per camera', () => cases.every((c) => alarms.some((a) => a.camera === c.id)), 10_000);

  // Bad requests: typed errors, nothing queued.
  t.true((await n.request('rec.v1.camera.put', { id: 'plain', streams: { main: sim.url('sdlive') } })).ok);
  const noEdge = await postJson(`${n.http}/api/cameras/plain/backfill`, { from: iso(from), to: iso(to) });
  t.is(noEdge.status, 409);
  t.is(noEdge.body.error?.code, 'EDGE_NOT_CONFIGURED');
  const future = await n.request('rec.v1.backfill', { camera: 'refused', from: Date.now() - 1000, to: Date.now() + 60_000 });
  t.is(future.error?.code, 'BAD_RANGE');
  const inverted = await n.request('rec.v1.backfill', { camera: 'refused', from: to, to: from });
  t.is(inverted.error?.code, 'BAD_TIME');
  const unknown = await postJson(`${n.http}/api/cameras/nope/backfill`, { from: iso(from), to: iso(to) });
  t.is(unknown.status, 404);
  const badTemplate = await n.request('rec.v1.camera.put', {
    id: 'bad',
    streams: { main: sim.url('sdlive') },
    edge: { replayUrl: sim.url('edge'), mode: 'url' },
  });
  t.is(badTemplate.error?.code, 'VALIDATION_FAILED');
  const extraKey = await n.request('rec.v1.backfill', { camera: 'refused', from, to, speed: 8 });
  t.is(extraKey.error?.code, 'VALIDATION_FAILED');
});
