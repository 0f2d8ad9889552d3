/**
 * A downloaded range plays in a real browser: Debian's Chromium, driven headless by
 * playwright-core, loads the MP4 straight from our HTTP endpoint in a <video> element,
 * its clock advances, and played to its end it stops at `to` within a frame; a closed
 * segment file's init gives MSE its length. (Chromium here has no HEVC decoder, so
 * this tries H.264.)
 */
import test from 'ava';
import { SimCamera } from '../sim/camera.ts';
import { launchChromium } from './helpers/browser.ts';
import { getJson, startNode, waitFor } from './helpers/recorder.ts';

test('Chromium plays a downloaded H.264+AAC range', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264aac') } })).ok);
  const t0 = Date.now() - 5000;
  const span = await waitFor(
    '8 s of video',
    async () => {
      const { body } = await getJson<{ spans: { from: string; to: string }[] }>(`${n.http}/api/recordings?camera=cam&from=${t0}&to=${Date.now() + 60_000}`);
      // Any span: an attempt cut short leaves a short span before the one that grows.
      return body.spans.find((s) => Date.parse(s.to) - Date.parse(s.from) > 8000) ?? null;
    },
    60_000,
    500,
  );

  const browser = await launchChromium(t);
  const page = await browser.newPage();
  const url = `${n.http}/api/cameras/cam/video.mp4?from=${encodeURIComponent(span.from)}&to=${Date.parse(span.from) + 6000}`;
  await page.setContent(`<video id="v" muted autoplay src="${url}"></video>`);
  // A string, so the test's TypeScript needs no DOM types: runs in the page.
  const state = await page.waitForFunction(
    `(() => {
      const v = document.getElementById('v');
      if (v.error) return { error: v.error.code };
      return v.currentTime > 2 ? { time: v.currentTime, width: v.videoWidth, duration: v.duration } : null;
    })()`,
    undefined,
    { timeout: 20_000 },
  );
  const result = (await state.jsonValue()) as { error?: number; time?: number; width?: number; duration?: number };
  t.is(result.error, undefined, `media error ${result.error}`);
  t.true(result.time! > 2);
  t.is(result.width, 320);
  t.true(result.duration! >= 5.9 && result.duration! <= 10.5, `duration ${result.duration}`);
  // Played to its end it stops at `to`, within a frame (25 fps): Chromium ignores the
  // edit list's end, so the samples presented from `to` on must not be in the file
  // (before, it played the rest of the last GOP, up to a GOP past `to`).
  await page.evaluate(`document.getElementById('v').playbackRate = 4`);
  const ended = await page.waitForFunction(
    `(() => {
      const v = document.getElementById('v');
      if (v.error) return { error: v.error.code };
      return v.ended ? { time: v.currentTime, duration: v.duration } : null;
    })()`,
    undefined,
    { timeout: 30_000 },
  );
  const end = (await ended.jsonValue()) as { error?: number; time?: number; duration?: number };
  t.is(end.error, undefined, `media error ${end.error}`);
  t.true(end.time! >= 6 - 0.041 && end.time! <= 6 + 0.041, `played to ${end.time} s of a 6 s range (duration ${end.duration})`);

  // /play through Media Source Extensions: the player appends the fMP4 as it arrives.
  const playFrom = Date.parse(span.from) + 2000;
  const playUrl = `${n.http}/api/cameras/cam/play?from=${playFrom}`;
  const head = await fetch(playUrl);
  const mime = head.headers.get('content-type')!;
  t.regex(mime, /^video\/mp4; codecs="avc1\.[0-9a-f]+,mp4a\.40\.2"$/);
  t.is(head.headers.get('x-recording-from'), new Date(Date.parse(head.headers.get('x-recording-from')!)).toISOString());
  await head.arrayBuffer();
  // Same origin as the recorder, as its own web UI will be (fetch needs it; <video src> does not).
  await page.goto(`${n.http}/api/health`);
  await page.setContent(`<video id="m" muted autoplay></video><script>
    const v = document.getElementById('m');
    const ms = new MediaSource();
    v.src = URL.createObjectURL(ms);
    ms.addEventListener('sourceopen', async () => {
      const sb = ms.addSourceBuffer(${JSON.stringify(mime)});
      const reader = (await fetch(${JSON.stringify(playUrl)})).body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        sb.appendBuffer(value);
        await new Promise((r) => sb.addEventListener('updateend', r, { once: true }));
      }
      ms.endOfStream();
    });
  </script>`);
  const mse = await page.waitForFunction(
    `(() => {
      const v = document.getElementById('m');
      if (v.error) return { error: v.error.code };
      return v.currentTime > 2 ? { time: v.currentTime, width: v.videoWidth } : null;
    })()`,
    undefined,
    { timeout: 20_000 },
  );
  const played = (await mse.jsonValue()) as { error?: number; time?: number; width?: number };
  t.is(played.error, undefined);
  t.true(played.time! > 2);
  t.is(played.width, 320);
  // Trick play answers video only (audio cannot follow at 8x), so its MIME names one codec.
  const trick = await fetch(`${playUrl}&speed=8`);
  t.is(trick.status, 200);
  t.regex(trick.headers.get('content-type')!, /^video\/mp4; codecs="avc1\.[0-9a-f]+"$/);
  await trick.arrayBuffer();

  // MSE plays the trick streams too: every frame at half speed, and I-frames backwards
  // (each shown for its GOP's duration), with the clock advancing and no media error.
  for (const query of ['speed=0.5', `reverse=1&from=${Date.parse(span.to) - 500}`]) {
    const url = `${n.http}/api/cameras/cam/play?${query.includes('from=') ? query : `from=${playFrom}&${query}`}`;
    const mimeOf = (await fetch(url, { method: 'HEAD' })).headers.get('content-type');
    t.regex(mimeOf ?? '', /^video\/mp4; codecs="avc1\.[0-9a-f]+"$/, query);
    // A function scope: setContent keeps the window, so top-level consts of the pages
    // before would clash.
    await page.setContent(`<video id="k" muted autoplay></video><script>(() => {
      window.t0 = performance.now();
      window.addEventListener('unhandledrejection', (e) => (window.err = String(e.reason)));
      const v = document.getElementById('k');
      const ms = new MediaSource();
      v.src = URL.createObjectURL(ms);
      ms.addEventListener('sourceopen', async () => {
        const sb = ms.addSourceBuffer(${JSON.stringify(mimeOf)});
        const reader = (await fetch(${JSON.stringify(url)})).body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          sb.appendBuffer(value);
          await new Promise((r) => sb.addEventListener('updateend', r, { once: true }));
        }
        ms.endOfStream();
      });
    })();</script>`);
    const res = await page.waitForFunction(
      `(() => {
        const v = document.getElementById('k');
        if (v.error) return { error: v.error.code };
        const b = v.buffered;
        const ranges = Array.from({ length: b.length }, (_, i) => [b.start(i), b.end(i)]);
        // After 15 s without reaching 1.5 s, the state goes into the assertion message.
        return v.currentTime > 1.5 || performance.now() - window.t0 > 15000 ? { time: v.currentTime, ranges, rs: v.readyState, err: window.err, paused: v.paused } : null;
      })()`,
      undefined,
      { timeout: 20_000 },
    );
    const r = (await res.jsonValue()) as { error?: number; time?: number };
    t.is(r.error, undefined, query);
    t.true(r.time! > 1.5, `${query}: ${JSON.stringify(r)}`);
  }

  // A closed segment file says its length in its init (mehd): a player that reads the
  // init alone (MSE here, as hls.js does with EXT-X-MAP) takes it as the duration.
  // Before, the init said nothing (Infinity here) and players that do not scan the
  // whole file showed the first GOP's length.
  const m3u8 = await (await fetch(`${n.http}/api/cameras/cam/video.m3u8?from=${encodeURIComponent(span.from)}&to=${Date.now() + 60_000}`)).text();
  const maps = [...m3u8.matchAll(/#EXT-X-MAP:URI="(segments\/\d+\.mp4)"/g)].map((m) => m[1]!);
  t.true(maps.length >= 2, `a closed segment (one followed by another): ${m3u8}`);
  const first = m3u8.split('#EXT-X-MAP:')[1]!;
  const segmentSec = [...first.matchAll(/#EXTINF:([\d.]+),/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  const initDuration = await page.evaluate(`(async () => {
    const buf = await (await fetch(${JSON.stringify(`${n.http}/api/cameras/cam/${maps[0]}`)})).arrayBuffer();
    const dv = new DataView(buf);
    let p = 0;
    while (p + 8 <= buf.byteLength && String.fromCharCode(...new Uint8Array(buf, p + 4, 4)) !== 'moof') p += dv.getUint32(p);
    const ms = new MediaSource();
    const v = document.createElement('video');
    v.src = URL.createObjectURL(ms);
    await new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
    const sb = ms.addSourceBuffer(${JSON.stringify(mime)});
    sb.appendBuffer(buf.slice(0, p));
    await new Promise((r) => sb.addEventListener('updateend', r, { once: true }));
    return ms.duration;
  })()`);
  t.true(
    typeof initDuration === 'number' && Math.abs(initDuration - segmentSec) < 0.15,
    `init says ${String(initDuration)} s, the segment's GOPs ${segmentSec} s`,
  );
});
