/**
 * The floor of any recorder built as the brief asks (ffmpeg → pipe → Node → file): one
 * Node process that starts, per camera URL given on the command line, the same ffmpeg
 * the recorder runs (`-c copy -f mp4` fragmented, to stdout) and appends what it reads
 * to one file per camera with a write stream. No splitting, no index, no fdatasync, no
 * smart stream, no HTTP. bench/ingest.ts `--mode floor` runs it beside the baseline, so
 * the ratio it reports is what the pipe hop and a Node process cost by themselves.
 *
 *   node --import tsx bench/floor-recorder.ts <outDir> <rtsp-url>...
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [outDir, ...urls] = process.argv.slice(2);
if (!outDir || urls.length === 0) throw new Error('usage: floor-recorder.ts <outDir> <rtsp-url>...');
mkdirSync(outDir, { recursive: true });
const children: ChildProcess[] = [];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
process.on('SIGTERM', () => {
  for (const c of children) c.kill('SIGKILL');
  process.exit(0);
});
for (const [i, url] of urls.entries()) {
  if (i > 0) await sleep(Number(process.env.CONNECT_STAGGER_MS ?? 150));
  const child = spawn(
    'ffmpeg',
    ['-nostdin', '-hide_banner', '-loglevel', 'warning', '-rtsp_transport', 'tcp', '-i', url, '-map', '0:v:0', '-map', '0:a:0?', '-c', 'copy', '-f', 'mp4', '-movflags', 'frag_keyframe+empty_moov+default_base_moof', 'pipe:1'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(child);
  child.stdout!.pipe(createWriteStream(join(outDir, `cam${i}.mp4`)));
}
