/**
 * `npm run bench [-- name...]`: runs the named benches (default: all) one after the
 * other, each as its own process with the arguments bench/README.md quotes, so a
 * person gets every figure with one command. Each prints its JSON; the figures and
 * how to read them are in bench/README.md. `npm run bench -- --list` lists them.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const BENCHES: Record<string, string[]> = {
  splitter: ['splitter.ts'],
  index: ['index.ts', '--cameras', '1,100'],
  ps: ['ps.ts', '--seconds', '60'],
  mp2p: ['mp2p.ts', '--seconds', '60'],
  prerecord: ['prerecord.ts'],
  ingest: ['ingest.ts', '--cameras', '25,50,100,150', '--seconds', '45'],
  'ingest-floor': ['ingest.ts', '--cameras', '100', '--seconds', '40', '--mode', 'floor'],
  playback: ['playback.ts'],
  flood: ['flood.ts', '--clients', '2000', '--record', '20', '--hold', '10'],
  live: ['live.ts', '--codec', 'h265aac', '--viewers', '10', '--seconds', '30'],
  smart: ['smart.ts'],
  backfill: ['backfill.ts', '--record', '45', '--seconds', '20'],
  retention: ['retention.ts', '--cameras', '50', '--minutes', '10', '--cap-mb', '2000', '--segment-seconds', '10'],
  crash: ['crash.ts', '--cameras', '50', '--minutes', '10', '--every', '30'],
  soak: ['soak.ts', '--minutes', '10', '--cameras', '4'],
  cluster: ['cluster.ts', '--cameras', '12', '--kills', '10', '--searches', '200'],
  'cluster-search': ['cluster-search.ts', '--searches', '200'],
  'cluster-cpu': ['cluster-cpu.ts', '--cameras', '100', '--seconds', '60', '--rounds', '2'],
  copies: ['copies.ts', '--segments', '20', '--rounds', '3'],
  s3: ['s3.ts'],
  pictures: ['pictures.ts'],
};

/** Node flags a bench needs besides tsx. */
const NODE_FLAGS: Record<string, string[]> = { prerecord: ['--expose-gc'] };

const asked = process.argv.slice(2);
if (asked.includes('--list')) {
  for (const [name, args] of Object.entries(BENCHES))
    console.log(`${name.padEnd(13)} node ${[...(NODE_FLAGS[name] ?? []), '--import', 'tsx'].join(' ')} bench/${args.join(' ')}`);
  process.exit(0);
}
const unknown = asked.filter((n) => !(n in BENCHES));
if (unknown.length > 0) {
  console.error(`unknown bench: ${unknown.join(', ')} (npm run bench -- --list)`);
  process.exit(2);
}
let failed = 0;
for (const name of asked.length > 0 ? asked : Object.keys(BENCHES)) {
  const [script, ...args] = BENCHES[name]!;
  console.error(`== bench ${name}`);
  const r = spawnSync(process.execPath, [...(NODE_FLAGS[name] ?? []), '--import', 'tsx', join(import.meta.dirname, script!), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    console.error(`bench ${name} exited ${r.status ?? r.signal}`);
  }
}
process.exit(failed > 0 ? 1 : 0);
