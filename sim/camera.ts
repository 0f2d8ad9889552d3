/**
 * A simulated IP camera for tests, the demo and benches: sim/camera.py (GStreamer's
 * RTSP server) as a child process on a loopback port, spawned through
 * lib/child-process.ts. The child watches its stdin and exits at EOF, so it dies with
 * this process even after SIGKILL; lib/child-process.ts kills any still running when
 * this process exits normally.
 */
import { join } from 'node:path';
import { spawnChild, type Child } from '../lib/child-process.ts';
import { freePort } from '../lib/nats-embedded.ts';

export { freePort };

export type SimMount =
  | 'h264aac'
  | 'h264'
  | 'h265aac'
  | 'file'
  | 'h264meta'
  | 'h264metabad'
  | 'h264metaklv'
  | 'sdlive'
  | 'edge'
  | 'edge-skewed'
  | 'h264ps'
  /** H.264 + G.711 A-law (payload type 8) / µ-law (0), 8 kHz mono. */
  | 'h264pcma'
  | 'h264pcmu'
  /** H.264 + G.722 (16 kHz), G.726-32 (8 kHz), Opus (48 kHz), MP3 (44.1 kHz), mono: all stored as AAC. */
  | 'h264g722'
  | 'h264g726'
  | 'h264opus'
  | 'h264mp3'
  /** H.264 + G.711 A-law announced in the SDP and never sent. */
  | 'h264pcmasilent'
  /** H.264 with 2 B-frames between references. */
  | 'h264bframes'
  /** Motion JPEG (payload type 26). */
  | 'mjpeg'
  /** H.264 + AAC offering UDP transport only: TCP SETUP is answered 461. */
  | 'h264aacudp';

export interface SimCameraOptions {
  port?: number;
  host?: string;
  width?: number;
  height?: number;
  fps?: number;
  gop?: number;
  bitrateKbit?: number;
  /** Pre-encoded H.264 MP4 served on /file without encoding (once, from its start). */
  file?: string;
  /**
   * A directory for the camera's SD card (sim/edge_sd.py): /sdlive streams live video
   * that is also recorded there, /edge and /edge-skewed replay it over ONVIF.
   */
  sd?: string;
  /** Every mount asks for these credentials, with this one scheme (GstRtspServer.RTSPAuth). */
  auth?: { scheme: 'basic' | 'digest'; user: string; password: string };
  /**
   * Report the frames each live mount's encoder did not deliver (framesDropped). Off by
   * default: the per-frame probe delays the video against the audio (camera.py).
   */
  reportHoles?: boolean;
}

export class SimCameraError extends Error {
  constructor(
    readonly code: 'SIM_START_FAILED' | 'SIM_NOT_RUNNING' | 'SIM_OPTION_MISSING',
    message: string,
  ) {
    super(message);
    this.name = 'SimCameraError';
  }
}

const PYTHON = '/usr/bin/python3';
const SCRIPT = join(import.meta.dirname, 'camera.py');

export class SimCamera {
  private child: Child | null = null;
  /** Why the server ended when nobody stopped it (a crash), else null. */
  unexpectedExit: string | null = null;
  /** Frames each mount's encoder did not deliver (camera.py's HOLE lines), by mount. */
  private readonly holes = new Map<string, number>();

  private constructor(
    readonly port: number,
    private readonly opts: SimCameraOptions,
  ) {}

  static async start(opts: SimCameraOptions = {}): Promise<SimCamera> {
    const cam = new SimCamera(opts.port ?? (await freePort()), opts);
    await cam.launch();
    return cam;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** The camera server's process id (benches subtract its CPU); 0 when not running. */
  get pid(): number {
    return this.child?.pid ?? 0;
  }

  /** The mount's URL; with `auth`, the credentials are in it (as a VMS configures a camera). */
  url(mount: SimMount, credentials: { user: string; password: string } | undefined = this.opts.auth): string {
    const who = credentials ? `${encodeURIComponent(credentials.user)}:${encodeURIComponent(credentials.password)}@` : '';
    return `rtsp://${who}${this.opts.host ?? '127.0.0.1'}:${this.port}/${mount}`;
  }

  private async launch(): Promise<void> {
    const o = this.opts;
    const args = [
      SCRIPT,
      '--port',
      String(this.port),
      '--host',
      o.host ?? '127.0.0.1',
      '--width',
      String(o.width ?? 320),
      '--height',
      String(o.height ?? 240),
      '--fps',
      String(o.fps ?? 25),
      '--gop',
      String(o.gop ?? 50),
      '--bitrate',
      String(o.bitrateKbit ?? 300),
    ];
    if (o.file) args.push('--file', o.file);
    if (o.sd) args.push('--sd', o.sd);
    if (o.auth) args.push('--auth', o.auth.scheme, '--user', o.auth.user, '--password', o.auth.password);
    if (o.reportHoles) args.push('--report-holes');
    const child = await startSimChild('sim-camera', args, (why) => new SimCameraError('SIM_START_FAILED', why));
    void child.exited.then((exit) => {
      if (this.child !== child) return;
      this.child = null;
      // Not asked for (stop() clears this.child first): say why, for a test's failure message.
      this.unexpectedExit = `camera server exited with ${exit.signal ?? exit.code}: ${child.stderrTail.slice(-5).join(' | ')}`;
    });
    let rest = '';
    child.stdout!.on('data', (s: string) => {
      const lines = (rest + s).split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        const m = /^HOLE \/(\S+) (\d+)$/.exec(line.trim());
        if (m) this.holes.set(m[1]!, (this.holes.get(m[1]!) ?? 0) + Number(m[2]));
      }
    });
    this.child = child;
  }

  /**
   * How many frames the mount's encoder has not delivered since this camera started (a
   * camera starved of CPU drops frames): holes in a recording up to this many are the
   * camera's, any more were lost on the way.
   */
  framesDropped(mount: SimMount): number {
    if (!this.opts.reportHoles) throw new SimCameraError('SIM_OPTION_MISSING', 'framesDropped needs a camera started with reportHoles');
    return this.holes.get(mount) ?? 0;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    await child.stop();
  }

  /** Stops and starts again on the same port: a camera that dropped off comes back. */
  async restart(): Promise<void> {
    await this.stop();
    let lastErr: unknown;
    for (let i = 0; i < 10; i++) {
      try {
        await this.launch();
        return;
      } catch (err) {
        lastErr = err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    throw lastErr;
  }
}

/**
 * Starts a sim/*.py camera server (lib/child-process.ts: SIGTERM to stop, SIGKILL 3 s
 * later) and resolves once it prints READY; stdin is a pipe it watches for EOF.
 */
export async function startSimChild(command: string, args: string[], error: (why: string) => Error): Promise<Child> {
  const child = spawnChild({ command, file: PYTHON, args, stdin: 'pipe', stopSignal: 'SIGTERM', stopGraceMs: 3000, stderrLines: 50 });
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const fail = (why: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      void child.stop();
      reject(error(`${why}: ${child.stderrTail.filter(Boolean).slice(-10).join(' | ')}`));
    };
    const timer = setTimeout(() => fail('no READY within 15 s'), 15_000);
    void child.exited.then((exit) => fail(exit.error?.code === 'SPAWN_FAILED' ? exit.error.message : `exited with ${exit.code ?? exit.signal}`));
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      if (done || !s.includes('READY')) return;
      done = true;
      clearTimeout(timer);
      resolve();
    });
  });
  return child;
}
