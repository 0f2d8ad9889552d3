/**
 * The simulated camera keeps time like a live camera: a client joining a shared mount
 * does not rewind the clients already playing.
 *
 * Pins the cause of `PS recording … 207 frames in 7.999 s` (issue 14): ffmpeg sends
 * `Range: npt=0.000-` with every PLAY, GstRTSPServer answered it with a flushing seek
 * of the shared media to 0, and every client already playing saw its timestamps go
 * back by the media's position; ffmpeg's muxer squashed the frames in between to one
 * tick each, so a segment held more frames than its media duration. sim/camera.py's
 * LiveMedia turns a PLAY's range into `now-`, which GstRTSPServer does not seek for.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { SimCamera } from '../sim/camera.ts';
import { waitFor } from './helpers/recorder.ts';

interface Packet {
  stream: number;
  dts: number;
}

/** An ffprobe client of `url` printing each packet's stream and DTS as it demuxes it. */
function probe(t: ExecutionContext, url: string): { packets: Packet[]; stop: () => void; stderr: () => string } {
  const child = spawn('ffprobe', ['-v', 'error', '-rtsp_transport', 'tcp', '-show_entries', 'packet=stream_index,dts', '-of', 'csv=p=0', url], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  t.teardown(stop);
  const packets: Packet[] = [];
  let rest = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (s: string) => {
    const lines = (rest + s).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      const [stream, dts] = line.split(',');
      if (dts !== undefined && dts !== 'N/A') packets.push({ stream: Number(stream), dts: Number(dts) });
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    err = (err + s).slice(-2000);
  });
  return { packets, stop, stderr: () => err };
}

const videoCount = (p: Packet[]): number => p.filter((x) => x.stream === 0).length;

test('a client joining a shared sim mount does not rewind the clients already playing (their timestamps only go forward)', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const url = sim.url('h264aac');
  const first = probe(t, url);
  // The first client has played for a while (the media's position is past 1 s)…
  await waitFor('the first client playing 1 s', () => videoCount(first.packets) >= 25, 30_000, 50);
  // …when a second one comes; the first goes on until it has seen 1 s more after that.
  const second = probe(t, url);
  await waitFor('the second client playing', () => videoCount(second.packets) >= 5, 30_000, 50);
  const seen = videoCount(first.packets);
  await waitFor('the first client 1 s further', () => videoCount(first.packets) >= seen + 25, 30_000, 50);
  first.stop();
  second.stop();

  const backwards: string[] = [];
  for (const stream of [0, 1]) {
    const dts = first.packets.filter((p) => p.stream === stream).map((p) => p.dts);
    t.true(dts.length > 0, `stream ${stream} of the first client: no packets (${first.stderr()})`);
    for (let i = 1; i < dts.length; i++) if (dts[i]! <= dts[i - 1]!) backwards.push(`stream ${stream} packet ${i}: ${dts[i - 1]} then ${dts[i]}`);
  }
  t.deepEqual(backwards, [], 'timestamps of the first client that went back when the second came');
});
