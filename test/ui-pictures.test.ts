/**
 * The web UI's pictures and nodes (issues 15 and 16) in Debian's headless Chromium
 * against a real recorder: pictures written over HTTP appear as markers on the camera's
 * timeline and as previews (decoded 160 px wide) in the strip under it; a marker or a
 * preview opens the picture itself with its type and metadata, and "Play video here"
 * plays the recording from the picture's time; the nodes panel lists this node.
 * Screenshots are kept in test-artifacts/.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { SimCamera } from '../sim/camera.ts';
import { launchChromium } from './helpers/browser.ts';
import { clearOfMidnight, startNode, waitForSpan } from './helpers/recorder.ts';

const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');

test('web UI: picture markers on the timeline, previews, the picture with its metadata, play from it; the nodes panel', async (t) => {
  t.timeout(540_000);
  await clearOfMidnight(t, 4);
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  const t0 = Date.now() - 5000;
  const span = await waitForSpan(n.http, 'cam', t0, 8_000);
  // Three pictures inside the recorded span, of three types, one with a plate.
  const from = Date.parse(span.from);
  const written: Record<string, string> = {};
  for (const [i, type] of ['alarm', 'anpr', 'face'].entries()) {
    const jpeg = await sharp({ create: { width: 640, height: 360, channels: 3, background: { r: 60 * i, g: 120, b: 200 - 60 * i } } })
      .jpeg()
      .toBuffer();
    const q = new URLSearchParams({ camera: 'cam', at: String(from + 2000 + i * 2000), type, ...(type === 'anpr' ? { 'meta.plate': 'AB123' } : {}) });
    const res = await fetch(`${n.http}/api/pictures?${q.toString()}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: jpeg });
    t.is(res.status, 200);
    written[type] = ((await res.json()) as { id: string }).id;
  }

  const browser = await launchChromium(t, { viewport: { width: 1200, height: 1000 }, timezoneId: 'UTC' });
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${n.http}/`);

  // Markers: one per picture on the camera's row, coloured by type.
  await page.waitForFunction(`document.querySelectorAll('#timeline g.row[data-camera="cam"] circle.picture').length === 3`, undefined, { timeout: 60_000 });
  t.deepEqual(
    (await page.evaluate<string[]>(`[...document.querySelectorAll('#timeline circle.picture')].map((c) => c.getAttribute('data-id'))`)).sort(),
    Object.values(written).sort(),
  );
  // Previews: the newest first, each decoded at 160 px.
  await page.waitForFunction(
    `[...document.querySelectorAll('#pictures .picture-thumb img')].filter((i) => i.complete && i.naturalWidth === 160).length === 3`,
    undefined,
    { timeout: 60_000 },
  );
  t.deepEqual(await page.evaluate<string[]>(`[...document.querySelectorAll('#pictures .picture-thumb')].map((b) => b.dataset.id)`), [
    written.face,
    written.anpr,
    written.alarm,
  ]);
  t.is(await page.locator('#pictures-count').innerText(), '(3)');

  // A marker opens the picture itself, with what was written about it.
  await page.locator(`#timeline circle.picture[data-id="${written.anpr}"]`).dispatchEvent('mousedown', { button: 0 });
  await page.waitForFunction(
    `!document.getElementById('picture-view').hidden && document.getElementById('picture-view').dataset.id === ${JSON.stringify(written.anpr)} && document.getElementById('picture-img').naturalWidth === 640`,
    undefined,
    { timeout: 30_000 },
  );
  const caption = await page.locator('#picture-caption').innerText();
  t.regex(caption, /anpr/);
  t.regex(caption, /plate=AB123/);
  await mkdir(ARTIFACTS, { recursive: true });
  await writeFile(join(ARTIFACTS, 'ui-pictures.png'), await page.screenshot({ fullPage: true }));

  // Lock it from the UI: the API says it is locked; unlock again.
  t.is(await page.locator('#picture-lock').innerText(), 'Lock');
  await page.click('#picture-lock');
  await page.waitForFunction(`document.getElementById('picture-view').dataset.locked === '1'`, undefined, { timeout: 30_000 });
  const locked = (await (await fetch(`${n.http}/api/pictures?camera=cam&from=${t0}&to=${Date.now() + 60_000}&locked=true`)).json()) as {
    pictures: { id: string }[];
  };
  t.deepEqual(
    locked.pictures.map((p) => p.id),
    [written.anpr],
  );
  t.is(await page.locator('#picture-lock').innerText(), 'Unlock');
  await page.click('#picture-lock');
  await page.waitForFunction(`document.getElementById('picture-view').dataset.locked === ''`, undefined, { timeout: 30_000 });

  // A preview opens its picture too.
  await page.click(`#pictures .picture-thumb[data-id="${written.face}"]`);
  await page.waitForFunction(`document.getElementById('picture-view').dataset.id === ${JSON.stringify(written.face)}`, undefined, { timeout: 30_000 });
  t.regex(await page.locator('#picture-caption').innerText(), /face/);

  // "Play video here" plays the recording from the picture's time.
  await page.click('#picture-play');
  await page.waitForFunction(
    `document.getElementById('video').dataset.mode === 'recording' && document.getElementById('video').dataset.started === '1'`,
    undefined,
    {
      timeout: 60_000,
    },
  );

  // The nodes panel: a single node lists itself.
  await page.click('#nodes-button');
  await page.waitForFunction(`document.querySelectorAll('#nodes tbody tr').length === 1`, undefined, { timeout: 30_000 });
  t.regex(await page.locator('#nodes tbody tr').innerText(), /local \(this node\)\s+alive\s+1/);
  t.regex(await page.locator('#nodes-mode').innerText(), /single node/);
  await writeFile(join(ARTIFACTS, 'ui-nodes.png'), await page.screenshot({ fullPage: true }));
  t.deepEqual(pageErrors, []);
});
