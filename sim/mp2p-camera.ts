/**
 * A simulated GB28181 / Hikvision-style MP2P camera with audio for tests and benches:
 * sim/mp2p.py run as a script (GStreamer's RTSP server, the program stream written by
 * the script) as a child process on a loopback port. Like sim/camera.ts, the child
 * exits when its stdin reaches EOF (so it dies with this process even after SIGKILL)
 * and an exit hook kills any still running when this process exits normally.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../lib/nats-embedded.ts';

/**
 * `/<video><audio>[-midgop][-wrap]`: video h264 | h265; audio aac (ADTS, 16 kHz, PSM
 * type 0x0F), alaw (G.711 A-law 8 kHz, type 0x90) or none; `-midgop`: the client's
 * first bytes are half a GOP in, before any PSM; `-wrap`: the PTS passes 2^33
 * WRAP_AFTER_SECONDS after the client connects. Every client gets its own encoder, so
 * a stream without `-midgop` starts at an I-frame.
 */
export type Mp2pMount = `${'h264' | 'h265'}${'aac' | 'alaw' | ''}${'' | '-midgop'}${'' | '-wrap'}`;

export const WRAP_AFTER_SECONDS = 8;

export interface SimMp2pOptions {
  port?: number;
  width?: number;
  height?: number;
  fps?: number;
  gop?: number;
  bitrateKbit?: number;
  /** videotestsrc pattern (default `ball`; `snow` is noise that spends the whole bitrate). */
  pattern?: string;
}

const PYTHON = '/usr/bin/python3';
const SCRIPT = join(import.meta.dirname, 'mp2p.py');
const live = new Set<ChildProcess>();
let hooked = false;

export class SimMp2pCamera {
  private constructor(
    readonly port: number,
    private child: ChildProcess | null,
  ) {}

  static async start(opts: SimMp2pOptions = {}): Promise<SimMp2pCamera> {
    if (!hooked) {
      hooked = true;
      process.on('exit', () => {
        for (const c of live) c.kill('SIGKILL');
      });
    }
    const port = opts.port ?? (await freePort());
    const args = [SCRIPT, '--port', String(port), '--width', String(opts.width ?? 320), '--height', String(opts.height ?? 240), '--fps', String(opts.fps ?? 25), '--gop', String(opts.gop ?? 50), '--bitrate', String(opts.bitrateKbit ?? 300), '--pattern', opts.pattern ?? 'ball'];
    const child = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const tail: string[] = [];
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      tail.push(...s.split('\n').filter(Boolean));
      tail.splice(0, Math.max(0, tail.length - 50));
    });
    await new Promise<void>((resolve, reject) => {
      const fail = (why: string): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`sim/mp2p.py: ${why}: ${tail.slice(-10).join(' | ')}`));
      };
      const timer = setTimeout(() => fail('no READY within 15 s'), 15_000);
      child.once('error', (err) => fail(err.message));
      child.once('exit', (code) => fail(`exited with ${code}`));
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (s: string) => {
        if (s.includes('READY')) {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve();
        }
      });
    });
    live.add(child);
    const cam = new SimMp2pCamera(port, child);
    child.once('exit', () => {
      live.delete(child);
      cam.child = null;
    });
    return cam;
  }

  /** The camera server's process id; 0 when not running. */
  get pid(): number {
    return this.child?.pid ?? 0;
  }

  url(mount: Mp2pMount): string {
    return `rtsp://127.0.0.1:${this.port}/${mount}`;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}
