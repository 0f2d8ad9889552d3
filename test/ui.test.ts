/**
 * The web UI (issue 4 item 7) in Debian's headless Chromium through playwright-core,
 * against a real recorder with a bearer token: the UI asks for the token, lists the
 * camera, draws its day timeline with a span, plays from a click on it (the video's
 * clock and its pixels advance), shows live video, and shows typed errors. The
 * screenshots are kept in test-artifacts/ (git-ignored) as artifacts of the run.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import WebSocket from 'ws';
import { SimCamera } from '../sim/camera.ts';
import { launchChromium } from './helpers/browser.ts';
import { clearOfMidnight, startNode, waitFor } from './helpers/recorder.ts';

const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');
const TOKEN = 'ui-test-token-0123456789';

async function shot(page: Page, name: string, selector?: string): Promise<Buffer> {
  await mkdir(ARTIFACTS, { recursive: true });
  const png = selector ? await page.locator(selector).screenshot() : await page.screenshot({ fullPage: true });
  await writeFile(join(ARTIFACTS, name), png);
  return png;
}

/** Runs in the page: the video's current picture compared with the one kept last time (count of changed pixels). */
const FRAME_DIFF = `(() => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(v, 0, 0);
  const now = ctx.getImageData(0, 0, c.width, c.height).data;
  const prev = window.__lastFrame;
  window.__lastFrame = now;
  if (!prev || prev.length !== now.length) return { changed: -1, pixels: now.length / 4 };
  let changed = 0;
  for (let i = 0; i < now.length; i += 4) {
    if (Math.abs(now[i] - prev[i]) + Math.abs(now[i + 1] - prev[i + 1]) + Math.abs(now[i + 2] - prev[i + 2]) > 24) changed++;
  }
  return { changed, pixels: now.length / 4 };
})()`;

const VIDEO_STATE = `(() => {
  const v = document.getElementById('video');
  return { time: v.currentTime, paused: v.paused, width: v.videoWidth, error: v.error ? v.error.code : null };
})()`;

interface VideoState {
  time: number;
  paused: boolean;
  width: number;
  error: number | null;
}

test('web UI: token, cameras, timeline, click to play (pixels advance), live, typed errors; screenshots kept', async (t) => {
  // Chromium, a camera and the recorder share 2 busy cores: allow more than ava's default.
  t.timeout(600_000);
  await clearOfMidnight(t, 4);
  const t00 = Date.now();
  const step = (what: string): void => t.log(`${((Date.now() - t00) / 1000).toFixed(1)} s: ${what}`);
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t, { authToken: TOKEN });
  const auth = { Authorization: `Bearer ${TOKEN}` };
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', name: 'Front door', streams: { main: sim.url('h264aac') } })).ok);
  const t0 = Date.now() - 5000;
  await waitFor(
    '16 s of video',
    async () => {
      const res = await fetch(`${n.http}/api/recordings?camera=cam&from=${t0}&to=${Date.now() + 60_000}`, { headers: auth });
      const body = (await res.json()) as { spans: { from: string; to: string }[] };
      const s = body.spans[0];
      return s && Date.parse(s.to) - Date.parse(s.from) > 16_000;
    },
    90_000,
    500,
  );

  step('video recorded');
  // The live WebSocket is behind the same token (given as a subprotocol by browsers).
  const refused = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`${n.http.replace(/^http/, 'ws')}/api/cameras/cam/live`, ['recorder.v1']);
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('open', () => resolve(101));
    ws.on('error', () => undefined);
  });
  t.is(refused, 401);

  const browser = await launchChromium(t, { viewport: { width: 1200, height: 900 } });
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${n.http}/`);

  step('page loaded');
  // Without a token the API answers 401: the UI says so and asks for it.
  await page.locator('#token-form').waitFor({ state: 'visible', timeout: 20_000 });
  t.is(await page.locator('#error').getAttribute('data-code'), 'UNAUTHORIZED');
  await page.fill('#token', 'wrong-token-wrong-token');
  await page.click('#token-form button[type=submit]');
  await page.waitForFunction(`document.getElementById('error').dataset.code === 'UNAUTHORIZED' && !document.getElementById('error').hidden`, undefined, {
    timeout: 20_000,
  });
  await page.fill('#token', TOKEN);
  await page.click('#token-form button[type=submit]');

  step('token accepted');
  // The camera with its status, and a timeline row with at least one span.
  const cam = page.locator('#cameras li[data-camera="cam"]');
  await cam.waitFor({ timeout: 20_000 });
  t.regex(await cam.innerText(), /Front door/);
  await page.waitForFunction(`document.querySelector('#cameras li[data-camera="cam"] .status')?.textContent === 'recording'`, undefined, { timeout: 30_000 });
  const run = page.locator('#timeline g.row[data-camera="cam"] g.span rect.run').first();
  await run.waitFor({ timeout: 30_000 });
  t.is(await run.getAttribute('data-type'), 'timing');
  step('timeline drawn');
  // Selecting the camera started live view: video arrives from the running ingest.
  await page.waitForFunction(
    `document.getElementById('video-note').textContent.startsWith('LIVE') && document.getElementById('video').currentTime > 0`,
    undefined,
    { timeout: 60_000 },
  );
  await shot(page, 'ui-live.png');

  step('live playing');
  // Zoom to the last minutes so the span is wide, then click its middle: playback from there.
  for (let i = 0; i < 8; i++) await page.click('#zoom-in');
  const spanBox = await page.locator('#timeline g.row[data-camera="cam"] g.span rect.run').first().boundingBox();
  t.truthy(spanBox);
  t.true(spanBox!.width > 20, `span is ${spanBox!.width} px wide`);
  await shot(page, 'ui-timeline.png', '#timeline');
  // 12 s before the span's end, so there is more than the 2 s to watch below.
  const [spanFrom, spanTo] = await page.evaluate<[number, number]>(
    `(() => { const s = document.querySelector('#timeline g.row[data-camera="cam"] g.span'); return [Date.parse(s.dataset.from), Date.parse(s.dataset.to)]; })()`,
  );
  const at = Math.max(0.05, (spanTo - 12_000 - spanFrom) / (spanTo - spanFrom));
  await page.mouse.click(spanBox!.x + spanBox!.width * at, spanBox!.y + spanBox!.height / 2);

  step('clicked the span');
  // The recording's own picture (not the live one still on screen until the first append).
  const started = (await (
    await page.waitForFunction(
      `(() => { const v = document.getElementById('video'); const s = ${VIDEO_STATE}; return v.dataset.mode === 'recording' && v.dataset.started === '1' && !s.paused && s.width > 0 ? s : null; })()`,
      undefined,
      { timeout: 30_000 },
    )
  ).jsonValue()) as VideoState;
  t.is(started.error, null);
  t.is(started.width, 320);
  t.false(await page.evaluate(`document.getElementById('live').classList.contains('active')`));
  step('playback started');
  const first = await page.evaluate<{ changed: number; pixels: number }>(FRAME_DIFF);
  t.is(first.changed, -1);
  const pngA = await shot(page, 'ui-playing-1.png', '#video-box');
  await page.waitForFunction(`document.getElementById('video').currentTime > ${started.time + 2}`, undefined, { timeout: 30_000 });
  const diff = await page.evaluate<{ changed: number; pixels: number }>(FRAME_DIFF);
  const pngB = await shot(page, 'ui-playing-2.png', '#video-box');
  await shot(page, 'ui-playing-page.png');
  // The moving ball and the burnt-in clock change between the two pictures.
  t.true(diff.changed > 50, `only ${diff.changed} of ${diff.pixels} pixels changed in 2 s of playback`);
  t.false(pngA.equals(pngB));
  const position = await page.locator('#position').innerText();
  t.not(position, '');

  step('pixels compared');
  // A trick-play request is either played or answered with a typed error the UI shows.
  await page.selectOption('#speed', '8');
  const outcome = (await (
    await page.waitForFunction(
      `(() => {
      const e = document.getElementById('error');
      if (!e.hidden && e.dataset.code) return { error: e.dataset.code, text: e.textContent };
      const v = document.getElementById('video');
      return v.dataset.speed === '8' && v.dataset.started === '1' && v.buffered.length ? { playing: true, via: v.dataset.via } : null;
    })()`,
      undefined,
      { timeout: 30_000 },
    )
  ).jsonValue()) as { error?: string; text?: string; playing?: boolean };
  t.true(outcome.playing === true || /^[A-Z_]+$/.test(outcome.error ?? ''), JSON.stringify(outcome));
  t.log(`speed 8: ${JSON.stringify(outcome)}`);
  await shot(page, 'ui-speed-8.png');

  step('trick play answered');
  // Dragging over the span selects a range: the download link is the recorder's video.mp4 of it.
  const box2 = (await page.locator('#timeline g.row[data-camera="cam"] g.span rect.run').first().boundingBox())!;
  const y = box2.y + box2.height / 2;
  await page.mouse.move(box2.x + box2.width * 0.2, y);
  await page.mouse.down();
  await page.mouse.move(box2.x + box2.width * 0.5, y, { steps: 5 });
  await page.mouse.move(box2.x + box2.width * 0.8, y, { steps: 5 });
  await page.mouse.up();
  const download = page.locator('#download');
  await download.waitFor({ state: 'visible', timeout: 10_000 });
  const href = (await download.getAttribute('href'))!;
  t.regex(href, /^\/api\/cameras\/cam\/video\.mp4\?from=.+&to=.+$/);
  const file = await fetch(`${n.http}${href}`, { headers: auth });
  t.is(file.status, 200);
  t.is(file.headers.get('content-type')?.split(';')[0], 'video/mp4');
  t.true((await file.arrayBuffer()).byteLength > 10_000);
  await shot(page, 'ui-selection.png');
  step('range selected');

  t.deepEqual(pageErrors, []);
});

test('web UI: locks and labels on the timeline, and the jump to the previous object of a class (smart stream) plays from it', async (t) => {
  t.timeout(540_000);
  await clearOfMidnight(t, 4);
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  t.true((await n.request('rec.v1.camera.put', { id: 'meta', name: 'Gate', streams: { main: sim.url('h264meta') } })).ok);
  const t0 = Date.now();
  const span = await waitFor(
    '10 s of video',
    async () => {
      const body = (await (await fetch(`${n.http}/api/recordings?camera=meta&from=${t0 - 5000}&to=${Date.now() + 60_000}`)).json()) as {
        spans: { from: string; to: string }[];
      };
      // Any span: an attempt cut short leaves a short span before the one that grows.
      return body.spans.find((s) => Date.parse(s.to) - Date.parse(s.from) > 10_000) ?? null;
    },
    90_000,
    500,
  );
  const from = Date.parse(span.from);
  const lock = await n.request('rec.v1.lock', { camera: 'meta', from: new Date(from + 2000).toISOString(), to: new Date(from + 6000).toISOString() });
  t.true(lock.ok, JSON.stringify(lock));
  const label = await n.request('rec.v1.label.add', {
    camera: 'meta',
    from: new Date(from + 3000).toISOString(),
    to: new Date(from + 5000).toISOString(),
    text: 'Van at the gate',
  });
  t.true(label.ok, JSON.stringify(label));

  const browser = await launchChromium(t, { viewport: { width: 1200, height: 900 } });
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${n.http}/`);
  await page.locator('#cameras li[data-camera="meta"]').waitFor({ timeout: 30_000 });
  await page.locator('#timeline g.row[data-camera="meta"] rect.lock').first().waitFor({ state: 'attached', timeout: 30_000 });
  const labelTitle = await page.locator('#timeline g.row[data-camera="meta"] rect.label title').first().textContent();
  t.is(labelTitle, 'Van at the gate');
  await page.click('#cameras li[data-camera="meta"]');

  // The sim camera's analytics name a Vehicle on odd UTC seconds: ◀ finds the latest one
  // once one is stored (the UI's search is the API's: wait for what it will find).
  await waitFor(
    'a stored Vehicle packet',
    async () => {
      const q = `from=${new Date(from).toISOString()}&to=${new Date(Date.now() + 60_000).toISOString()}&class=Vehicle`;
      const body = (await (await fetch(`${n.http}/api/cameras/meta/smart?${q}`)).json()) as { records?: unknown[] };
      return body.records?.length ? true : null;
    },
    60_000,
    500,
  );
  await page.fill('#smart-class', 'Vehicle');
  await page.click('#smart-prev');
  t.teardown(async () =>
    t.log(
      `error banner: ${await page
        .locator('#error')
        .textContent()
        .catch(() => '?')}; video: ${JSON.stringify(await page.evaluate('({...document.getElementById("video").dataset})').catch(() => null))}`,
    ),
  );
  const jumped = (await (
    await page.waitForFunction(
      `(() => {
      // An error shown to the user ends the wait at once and names itself below.
      const e = document.getElementById('error');
      if (!e.hidden && e.dataset.code) return 'error ' + e.dataset.code + ': ' + e.textContent;
      const v = document.getElementById('video');
      return v.dataset.jumpedTo && v.dataset.mode === 'recording' && v.dataset.started === '1' ? v.dataset.jumpedTo : null;
    })()`,
      undefined,
      { timeout: 60_000 },
    )
  ).jsonValue()) as string;
  t.false(jumped.startsWith('error'), jumped);
  // The stored packet there names a Vehicle (its camera time is an odd UTC second).
  const there = (await (
    await fetch(`${n.http}/api/cameras/meta/smart?from=${jumped}&to=${new Date(Date.parse(jumped) + 1).toISOString()}&class=Vehicle`)
  ).json()) as { records: { contentTime?: string }[] };
  t.is(there.records.length, 1, `a Vehicle packet at ${jumped}`);
  t.is(Math.floor(Date.parse(there.records[0]!.contentTime!) / 1000) % 2, 1, `its camera time ${there.records[0]!.contentTime} is an odd second`);
  await page.waitForFunction(`document.getElementById('video').currentTime > 0.5`, undefined, { timeout: 30_000 });
  await shot(page, 'ui-smart-jump.png');

  // A class nobody reports: a typed error shown to the user.
  await page.fill('#smart-class', 'Unicorn');
  await page.click('#smart-prev');
  await page.waitForFunction(`!document.getElementById('error').hidden`, undefined, { timeout: 20_000 });
  t.is(await page.locator('#error').getAttribute('data-code'), 'NO_SMART_DATA');
  t.deepEqual(pageErrors, []);
});
