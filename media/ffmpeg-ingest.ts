/**
 * The one module that runs ffmpeg for ingest (through fluent-ffmpeg, which is
 * unmaintained upstream, so nothing else imports it). It pulls RTSP over TCP and
 * writes fragmented MP4 to a pipe that Fmp4Splitter cuts into init + one fragment
 * per GOP.
 *
 * Child lifetime: every ffmpeg we start is in `live` until it exits; `stop()` kills
 * it, and a process 'exit' hook kills whatever is left, so a thrown exception or a
 * failing test leaves no child. If this process dies by SIGKILL, ffmpeg's next write
 * to the pipe fails with EPIPE and it exits (at most one GOP later); -nostdin keeps it
 * from waiting on a terminal.
 */
import ffmpeg from 'fluent-ffmpeg';
import type { ChildProcess } from 'node:child_process';
import { Fmp4Splitter, type Fmp4Chunk } from './fmp4-splitter.ts';

export interface IngestOptions {
  url: string;
  ffmpegPath: string;
  /** Kill the session if the camera sends nothing for this long. */
  stallTimeoutMs: number;
  onStderrLine?: (line: string) => void;
  /**
   * Read `url` as this container instead of RTSP (an MPEG-PS camera through
   * media/mp2p-bridge.ts: `mpeg` on a loopback tcp:// URL).
   */
  inputFormat?: 'mpeg';
}

export interface IngestExit {
  /** True when stop() was called: the exit was ours, not the camera's. */
  requested: boolean;
  /** ffmpeg's last stderr lines or the splitter's error, when it failed. */
  error?: Error;
}

export interface IngestSession {
  readonly chunks: AsyncIterable<Fmp4Chunk>;
  readonly exited: Promise<IngestExit>;
  stop(): void;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** Number of ffmpeg children alive in this process (for tests and metrics). */
export function liveIngestCount(): number {
  return live.size;
}

export function startIngest(opts: IngestOptions): IngestSession {
  installExitHook();
  const splitter = new Fmp4Splitter();
  let requested = false;
  let lastDataAt = Date.now();
  let resolveExit!: (exit: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));
  const stderrTail: string[] = [];

  const command = ffmpeg({ stdoutLines: 0 })
    .setFfmpegPath(opts.ffmpegPath)
    .input(opts.url)
    .inputOptions([
      '-nostdin',
      '-hide_banner',
      '-loglevel', 'warning',
      ...(opts.inputFormat ? ['-f', opts.inputFormat] : ['-rtsp_transport', 'tcp']),
      // RTSP socket I/O timeout in microseconds: a vanished camera ends the session.
      '-timeout', String(opts.stallTimeoutMs * 1000),
    ])
    .outputOptions([
      '-map', '0:v:0',
      '-map', '0:a:0?',
      '-c', 'copy',
      '-f', 'mp4',
      '-movflags', 'frag_keyframe+empty_moov+default_base_moof',
    ]);

  let child: ChildProcess | undefined;
  let splitterError: Error | undefined;
  const finish = (error?: Error): void => {
    clearInterval(watchdog);
    if (child) live.delete(child);
    resolveExit(requested ? { requested } : { requested, error: splitterError ?? error });
  };
  command.on('start', () => {
    child = (command as unknown as { ffmpegProc?: ChildProcess }).ffmpegProc;
    if (child) live.add(child);
    // fluent-ffmpeg spawns asynchronously: a stop() that came first could not kill it.
    if (requested) command.kill('SIGKILL');
  });
  command.on('stderr', (line: string) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
    opts.onStderrLine?.(line);
  });
  command.on('end', () => finish(new Error('camera stream ended')));
  command.on('error', (err: Error) => {
    const tail = stderrTail.filter((l) => l.trim() !== '').slice(-5).join(' | ');
    finish(new Error(tail ? `${err.message.split('\n')[0]}: ${tail}` : err.message));
  });
  splitter.on('error', (err: Error) => {
    splitterError = err;
    command.kill('SIGKILL');
  });

  // fluent-ffmpeg pipes ffmpeg's stdout into the splitter.
  command.pipe(splitter, { end: true });

  const watchdog = setInterval(() => {
    if (Date.now() - lastDataAt > opts.stallTimeoutMs + 5000) {
      stderrTail.push(`no fragment for ${Date.now() - lastDataAt} ms`);
      command.kill('SIGKILL');
    }
  }, 1000);
  watchdog.unref();

  async function* chunks(): AsyncGenerator<Fmp4Chunk> {
    for await (const chunk of splitter as AsyncIterable<Fmp4Chunk>) {
      lastDataAt = Date.now();
      yield chunk;
    }
  }

  return {
    chunks: chunks(),
    exited,
    stop() {
      requested = true;
      command.kill('SIGKILL');
    },
  };
}
