/**
 * A simulated GB28181 / Hikvision-style MP2P camera with audio for tests and benches:
 * sim/mp2p.py run as a script (GStreamer's RTSP server, the program stream written by
 * the script) as a child process on a loopback port, started like sim/camera.ts's
 * (lib/child-process.ts): the child exits when its stdin reaches EOF (so it dies with
 * this process even after SIGKILL) and is killed when this process exits normally.
 */
import { join } from 'node:path';
import type { Child } from '../lib/child-process.ts';
import { freePort } from '../lib/nats-embedded.ts';
import { startSimChild } from './camera.ts';

/**
 * `/<video><audio>[-midgop][-wrap][-udp]`: video h264 | h265; audio aac (ADTS, 16 kHz,
 * PSM type 0x0F), alaw (G.711 A-law 8 kHz, type 0x90) or none; `-midgop`: the client's
 * first bytes are half a GOP in, before any PSM; `-wrap`: the PTS passes 2^33
 * WRAP_AFTER_SECONDS after the client connects; `-udp`: RTP over UDP only (a SETUP
 * asking for TCP is answered 461). Every client gets its own encoder, so a stream
 * without `-midgop` starts at an I-frame.
 */
export type Mp2pMount = `${'h264' | 'h265'}${'aac' | 'alaw' | ''}${'' | '-midgop'}${'' | '-wrap'}${'' | '-udp'}`;

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
  /** Every mount asks for these credentials, with this one scheme (GstRtspServer.RTSPAuth). */
  auth?: { scheme: 'basic' | 'digest'; user: string; password: string };
}

const SCRIPT = join(import.meta.dirname, 'mp2p.py');

export class SimMp2pCamera {
  private constructor(
    readonly port: number,
    private child: Child | null,
    private readonly auth: SimMp2pOptions['auth'],
  ) {}

  static async start(opts: SimMp2pOptions = {}): Promise<SimMp2pCamera> {
    const port = opts.port ?? (await freePort());
    const args = [
      SCRIPT,
      '--port',
      String(port),
      '--width',
      String(opts.width ?? 320),
      '--height',
      String(opts.height ?? 240),
      '--fps',
      String(opts.fps ?? 25),
      '--gop',
      String(opts.gop ?? 50),
      '--bitrate',
      String(opts.bitrateKbit ?? 300),
      '--pattern',
      opts.pattern ?? 'ball',
    ];
    if (opts.auth) args.push('--auth', opts.auth.scheme, '--user', opts.auth.user, '--password', opts.auth.password);
    const child = await startSimChild('sim-mp2p-camera', args, (why) => new Error(`sim/mp2p.py: ${why}`));
    const cam = new SimMp2pCamera(port, child, opts.auth);
    void child.exited.then(() => {
      if (cam.child === child) cam.child = null;
    });
    return cam;
  }

  /** The camera server's process id; 0 when not running. */
  get pid(): number {
    return this.child?.pid ?? 0;
  }

  /** The mount's URL; with `auth`, the credentials are in it, percent-encoded (as a VMS configures a camera). */
  url(mount: Mp2pMount, credentials: { user: string; password: string } | undefined = this.auth): string {
    const who = credentials ? `${encodeURIComponent(credentials.user)}:${encodeURIComponent(credentials.password)}@` : '';
    return `rtsp://${who}127.0.0.1:${this.port}/${mount}`;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    await child.stop();
  }
}
