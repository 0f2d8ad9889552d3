/**
 * Golden outputs (issue 14 item 7): the bytes of the progressive MP4, fMP4 and PS
 * downloads of fixed ranges of a checked-in clip are pinned by their sha256, so a change
 * that alters output bytes without bumping the format version (which is part of the
 * ETag, and so tells every cache and resumed download that the bytes changed) fails.
 * Brittle on purpose.
 *
 * The clip (test/fixtures/golden, made by scripts/make-golden-clip.ts): 8 s of H.264
 * (1 s GOPs, B-frames) + AAC in two 4 s segments, once as fMP4 (camera `golden`) and once
 * as MPEG-PS (camera `goldenps`). A recorder started on a data dir holding only the
 * files indexes them at start-up (reconcile, as `reindex` does); the downloads go
 * through its real HTTP routes. The ranges start inside a GOP, end inside a GOP, and
 * one runs across the two segments.
 *
 * When this fails because output bytes changed on purpose: bump the format version
 * named in the message, and paste the digests the message prints into PINNED.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PS_OUTPUT_VERSION } from '../playback/ps-range.ts';
import { FMP4_RANGE_FORMAT_VERSION } from '../playback/fmp4-range.ts';
import { PROGRESSIVE_FORMAT_VERSION } from '../playback/progressive-mp4.ts';
import { GOLDEN_DIR, type GoldenManifest } from '../scripts/make-golden-clip.ts';
import { startNode, tempDir } from './helpers/recorder.ts';

type Output = 'progressive' | 'fmp4' | 'ps';

/** Where each output's format version lives, what it is now and its ETag prefix. */
const FORMATS: Record<Output, { file: string; version: number; etag: string }> = {
  progressive: {
    file: 'playback/progressive-mp4.ts (PROGRESSIVE_FORMAT_VERSION)',
    version: PROGRESSIVE_FORMAT_VERSION,
    etag: `"mp4v${PROGRESSIVE_FORMAT_VERSION}-`,
  },
  fmp4: { file: 'playback/fmp4-range.ts (FMP4_RANGE_FORMAT_VERSION)', version: FMP4_RANGE_FORMAT_VERSION, etag: `"fmp4v${FMP4_RANGE_FORMAT_VERSION}-` },
  ps: { file: 'api/video-ps.ts (PS_OUTPUT_VERSION)', version: PS_OUTPUT_VERSION, etag: `"psv${PS_OUTPUT_VERSION}-` },
};

/** Ranges in ms after the clip's start (GOPs at whole seconds, segments [0, 4000) and [4000, 8000)). */
const RANGES = {
  'inside-gops': [1400, 2600], // starts inside GOP 1, ends inside GOP 2
  'across-segments': [2500, 5300], // starts inside GOP 2 of the first segment, ends inside GOP 5 of the second
  whole: [0, 8000],
} as const;

const CAMERAS = ['golden', 'goldenps'] as const;

/**
 * The pins: format versions (the ETags were `"mp4v2-…"`, `"fmp4v2-…"`, `"psv2-…"`) and
 * the sha256 of each body, by `camera range output`.
 */
const PINNED: { versions: Record<Output, number>; sha256: Record<string, string> } = {
  versions: { progressive: 2, fmp4: 2, ps: 2 },
  sha256: {
    'golden inside-gops progressive': '7bfc51551ffafed3c2fc9e8485328bb4ed69006bacf57076cfe6382fa74dcef3',
    'golden inside-gops fmp4': 'c7b2e6692e84a1d2dc252d9a60cc3efc635dbdf5626617210b37543f5455a2cc',
    'golden inside-gops ps': 'fa65fe3cca42caf8b57be8a59a3a0e0646ba6709432b3c07ff13e2b26146fd7b',
    'golden across-segments progressive': '05e2096c020116d016ba5e0adf77f7aceb6a34f04b0bf9fcd1d950358f35c2d9',
    'golden across-segments fmp4': '8f59f7242fc80850077bac9d4e9d6bec2d901cb4675820c213cd30b642d64fe1',
    'golden across-segments ps': '12232ef7000292e8fbf16a324762267fe73a39020d1d0a44735d292bf71fe373',
    'golden whole progressive': '6b9d03ee067c6723a93e4a19859e37c772326dd809b58e84264a5ef0450a3125',
    'golden whole fmp4': 'c3fa3fde7431c1fb51aac623ab87303ba4db13ef4964919ce87e20172b937389',
    'golden whole ps': 'efabffa9ae5d0a3565e5d642ee80c7e50c3900636901f9bb21521d7844fe27ba',
    'goldenps inside-gops progressive': '41b83463eb9148231b2318474ad056a603b08ece7505109b73a649cceae36d7b',
    'goldenps inside-gops fmp4': '4eb848e27a50a6f6cb18fed1a805e9709cf0f83c5b07724b9ca1cb957c2186cb',
    'goldenps inside-gops ps': 'fa65fe3cca42caf8b57be8a59a3a0e0646ba6709432b3c07ff13e2b26146fd7b',
    'goldenps across-segments progressive': 'c31413404b0b23b76d8e5c212d3a3b1be90e44b3e98292499e89260421f4f0f2',
    'goldenps across-segments fmp4': '6b11b6895d46dc42a495be4c03cca86f840bc3b64a42856fea681d41e5d8f84a',
    'goldenps across-segments ps': '12232ef7000292e8fbf16a324762267fe73a39020d1d0a44735d292bf71fe373',
    'goldenps whole progressive': '25851d24589eaf577f4d9a459e6a5ca62f723516d4c09a86c7ced641b70c2232',
    'goldenps whole fmp4': '9c86d90da3a1a49296dd99fec9093e2274fa8f4f3c61266b3885a5bfefda9947',
    'goldenps whole ps': 'ed09b67ced4c833eddcedf372313960a027afed9c0fca3f08c5e509141a0025d',
  },
};

const sha256 = (b: Buffer | Uint8Array): string => createHash('sha256').update(b).digest('hex');

function url(http: string, camera: string, output: Output, fromMs: number, toMs: number): string {
  const q = `from=${fromMs}&to=${toMs}`;
  if (output === 'ps') return `${http}/api/cameras/${camera}/video.ps?${q}`;
  return `${http}/api/cameras/${camera}/video.mp4?${q}${output === 'fmp4' ? '&format=fmp4' : ''}`;
}

test('the progressive MP4, fMP4 and PS downloads of fixed ranges of the golden clip are the pinned bytes (or their format version was bumped)', async (t) => {
  const manifest = JSON.parse(await readFile(join(GOLDEN_DIR, 'clip.json'), 'utf8')) as GoldenManifest;
  // A changed fixture is not an output change: say which it is.
  for (const [rel, digest] of Object.entries(manifest.files)) {
    t.is(
      sha256(await readFile(join(GOLDEN_DIR, rel))),
      digest,
      `test/fixtures/golden/${rel} is not the file clip.json lists (made by scripts/make-golden-clip.ts)`,
    );
  }

  const dir = await tempDir(t, 'rec-golden-');
  await cp(join(GOLDEN_DIR, 'pools'), join(dir, 'pools'), { recursive: true });
  const n = await startNode(t, {}, dir);
  t.is(n.node.reconcileReport?.reindexed.length, Object.keys(manifest.files).length, 'every segment file indexed at start-up');
  for (const camera of CAMERAS) {
    // A camera no one can reach, with a plan that records nothing: its video is the clip's.
    const put = await n.request('rec.v1.camera.put', { id: camera, streams: { main: 'rtsp://127.0.0.1:9/none' } });
    t.true(put.ok, JSON.stringify(put));
    t.true((await n.request('rec.v1.schedule.put', { camera, slots: [] })).ok);
  }

  // Each range twice: the first request reads the files' moofs, the second may find the
  // sample tables cached or persisted by then; the bytes must not depend on which.
  const got: Record<string, string> = {};
  const again: string[] = [];
  const etags: string[] = [];
  for (const pass of [1, 2]) {
    for (const camera of CAMERAS) {
      for (const [name, [from, to]] of Object.entries(RANGES)) {
        for (const output of Object.keys(FORMATS) as Output[]) {
          const key = `${camera} ${name} ${output}`;
          const res = await fetch(url(n.http, camera, output, manifest.startMs + from, manifest.startMs + to));
          const body = Buffer.from(await res.arrayBuffer());
          t.is(res.status, 200, `${key}: ${body.toString('utf8', 0, 300)}`);
          const etag = res.headers.get('etag') ?? '';
          if (!etag.startsWith(FORMATS[output].etag)) etags.push(`${key}: ETag ${etag}, expected ${FORMATS[output].etag}…`);
          if (pass === 1) got[key] = sha256(body);
          else if (got[key] !== sha256(body)) again.push(key);
        }
      }
    }
  }
  t.deepEqual(etags, [], 'ETags carry the format version');
  t.deepEqual(again, [], 'the same request gave other bytes the second time');

  const repin = `re-pin with:\n  versions: ${JSON.stringify(Object.fromEntries(Object.entries(FORMATS).map(([k, f]) => [k, f.version])))},\n  sha256: ${JSON.stringify(got, null, 4).replace(/\n/g, '\n  ')},`;
  const problems: string[] = [];
  for (const output of Object.keys(FORMATS) as Output[]) {
    const f = FORMATS[output];
    const keys = Object.keys(got).filter((k) => k.endsWith(` ${output}`));
    const changed = keys.filter((k) => PINNED.sha256[k] !== got[k]);
    if (f.version !== PINNED.versions[output]) {
      problems.push(`${output}: format version ${f.version} in ${f.file}, the digests are pinned against version ${PINNED.versions[output]}: re-pin`);
    } else if (changed.length > 0) {
      problems.push(`${output}: output bytes changed (${changed.join(', ')}): bump the format version in ${f.file} and re-pin`);
    }
  }
  if (process.env.GOLDEN_PRINT) t.log(repin);
  t.deepEqual(problems, [], problems.length > 0 ? repin : undefined);
});
