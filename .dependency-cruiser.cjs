/**
 * The layering of the tree (docs: each folder's README.md says what it may import).
 * A folder may import its own files and the folders below it, never those above:
 *
 *   lib                      errors, config, log, time, validation (imports nothing of ours)
 *   media                    formats: mp4/, codec/, ps/ (bytes in, bytes out; no I/O policy)
 *   rtsp                     the RTSP client, the MP2P bridge, edge URLs
 *   ffmpeg                   every spawn of ffmpeg and its arguments
 *   schedule, index          plan logic; the LMDB index (schedule reads index/records.ts only)
 *   playback                 the read path over segment files and the index
 *   storage                  segment files, retention, thinning, reconcile
 *   smart                    the analytics stream: demux, writer, its retention
 *   ingest, live             which ingest runs; live fan-out and preview
 *   actors, backfill         per-camera machines and their supervisors
 *   ops, security            metrics and health; users, access, redaction
 *   services                 what the API offers, over everything below
 *   api                      HTTP routes and NATS endpoints (transport only)
 *   node.ts, recorder.ts     composition root and CLI; sim/ (test cameras) beside them
 *
 * test/, bench/ and scripts/ may import anything. No module import circle anywhere.
 */
const LAYERS = [
  ['lib'],
  ['media'],
  ['rtsp'],
  ['ffmpeg'],
  ['schedule', 'index'],
  ['playback'],
  ['storage'],
  ['smart'],
  ['pictures', 'buckets'],
  ['ingest', 'live'],
  ['actors', 'backfill'],
  ['ops', 'security'],
  ['cluster'],
  ['services'],
  ['api'],
];

/** For each layer, a rule: its files must not import any folder of a higher layer. */
const upward = LAYERS.slice(0, -1).map((layer, i) => {
  const above = LAYERS.slice(i + 1).flat();
  return {
    name: `no-upward-from-${layer.join('-')}`,
    comment: `${layer.join(', ')} must not import ${above.join(', ')} (a higher layer)`,
    severity: 'error',
    from: { path: `^(${layer.join('|')})/` },
    to: { path: `^(${above.join('|')}|node\\.ts|recorder\\.ts)(/|$)` },
  };
});

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'schedule-reads-only-records',
      comment: 'schedule/ is pure plan logic: of the index it reads only the record types',
      severity: 'error',
      from: { path: '^schedule/' },
      to: { path: '^index/', pathNot: '^index/records\\.ts$' },
    },
    {
      name: 'index-tables-private',
      comment: 'the LMDB databases are private to index/: everything else reads and writes through the record stores of RecorderIndex (index/db.ts)',
      severity: 'error',
      from: { pathNot: '^index/' },
      to: { path: '^index/(tables\\.ts$|migrations/)' },
    },
    {
      name: 'no-circular',
      comment: 'an import circle makes load order and ownership unclear',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'web-is-the-browser',
      comment: 'web/ runs in the browser: it imports its own modules only and reaches the server over HTTP',
      severity: 'error',
      from: { path: '^web/' },
      to: { pathNot: '^web/' },
    },
    {
      name: 'product-not-from-sim',
      comment: 'sim/ holds the test cameras: only the CLI (recorder.ts, for --demo), tests, benches and scripts start them',
      severity: 'error',
      from: { pathNot: '^(test|bench|scripts|sim)/|^recorder\\.ts$' },
      to: { path: '^sim/' },
    },
    {
      name: 'product-not-from-tests',
      comment: 'the product never imports test/, bench/ or scripts/',
      severity: 'error',
      from: { pathNot: '^(test|bench|scripts)/' },
      to: { path: '^(test|bench|scripts)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
};
