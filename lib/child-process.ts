/**
 * The one place this process starts a child process (ffmpeg for ingest, preview, frame
 * grabs and edge replay; the embedded nats-server; fallocate for the index reserve;
 * the test cameras of sim/). Every child gets the same care, in the manner of
 * mediasoup's Worker (docs/design/lifecycle.md "Child processes"):
 *
 * - Spawn only with headroom: out of file descriptors (EMFILE) Node's spawn returns a
 *   child without stdio streams, and whoever reads them throws from a callback: an
 *   uncaught exception that ended the recorder at the next ffmpeg start (issue 13).
 *   `spawnChild` first checks that SPAWN_RESERVE descriptors are left, else it throws
 *   ChildProcessError SPAWN_NO_DESCRIPTORS, which the owner handles like any failed
 *   attempt (a camera backs off, a frame request answers 503). A spawn takes up to ~8
 *   descriptors for a moment (stdio pipes and the exec status pipe); the reserve keeps
 *   room for them and for the sockets and files opened meanwhile.
 * - stderr is always read (a child whose stderr pipe fills blocks on its next line),
 *   line by line to `onStderrLine`, and its last `stderrLines` lines are kept: bounded,
 *   whatever the child says.
 * - The child dies with its owner: `stop()`, or the owner's AbortSignal (`signal`),
 *   kills it (stopSignal, then SIGKILL after stopGraceMs); a spawn with a signal that is
 *   already aborted starts nothing and throws its reason (the node's is SHUTTING_DOWN).
 *   It dies with this process too: an 'exit' hook SIGKILLs every child still running,
 *   so a thrown exception or a failing test leaves none. (After a SIGKILL of this
 *   process no hook runs: each child is made to notice by itself, ffmpeg by EPIPE on
 *   its output, nats-server and the test cameras by EOF on their stdin.)
 * - `exited` resolves once (never rejects) when the process has exited and, for an exit
 *   we did not cause, its stderr is read (at most STDERR_DRAIN_MS after the exit): with `requested` when we asked
 *   for it, else with a typed error for an exit we did not ask for that failed
 *   (CHILD_EXITED: a non-zero code or a signal, with the stderr tail; CHILD_TIMEOUT:
 *   ran past `timeoutMs`; SPAWN_FAILED: the binary could not be started). An exit
 *   with code 0 that nobody asked for is `unexpected` but has no error: whether that
 *   is a failure (an ingest's camera stream ended) is the owner's call.
 * - Every live child is counted by its `command` (`liveChildren()`), which feeds the
 *   metric `recorder_child_processes{command}` (ops/metrics.ts) and the tests' checks
 *   that nothing leaked. A child counts from its spawn until its exit is reaped.
 *
 * Error: ChildProcessError, codes SPAWN_NO_DESCRIPTORS, SPAWN_FAILED, CHILD_EXITED,
 * CHILD_TIMEOUT.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';

/** Descriptors that must stay free for a spawn to be tried. */
export const SPAWN_RESERVE = 64;
/** How long after a child's exit its stderr may still be read before `exited` resolves. */
const STDERR_DRAIN_MS = 1000;
/** stopSignal other than SIGKILL: how long the child has to exit before SIGKILL. */
const DEFAULT_STOP_GRACE_MS = 5000;

export type ChildProcessErrorCode = 'SPAWN_NO_DESCRIPTORS' | 'SPAWN_FAILED' | 'CHILD_EXITED' | 'CHILD_TIMEOUT';

export class ChildProcessError extends Error {
  constructor(
    readonly code: ChildProcessErrorCode,
    /** The child's `command` (what it is: `ffmpeg`, `nats-server`…). */
    readonly command: string,
    message: string,
    readonly exit: { code: number | null; signal: NodeJS.Signals | null } | null = null,
    /** The last lines the child wrote to stderr. */
    readonly stderr: readonly string[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ChildProcessError';
  }
}

export interface SpawnChildOptions {
  /** What the child is, for the metric, errors and logs: `ffmpeg`, `nats-server`, `sim-camera`… */
  command: string;
  /** What it is for, when one command serves several (`ingest`, `preview`, `frame`): counted apart. */
  purpose?: string;
  /** The executable. */
  file: string;
  args: readonly string[];
  /** Default `ignore` (/dev/null); `pipe` to write to it (or to let the child watch it for EOF). */
  stdin?: 'pipe' | 'ignore';
  /** Default `pipe`. */
  stdout?: 'pipe' | 'ignore';
  /** The owner's signal: aborting it stops the child; already aborted, nothing is spawned. */
  signal?: AbortSignal;
  /** Sent by stop() (default SIGKILL); anything else is followed by SIGKILL after stopGraceMs. */
  stopSignal?: NodeJS.Signals;
  stopGraceMs?: number;
  /** stderr lines kept for errors (default 20). */
  stderrLines?: number;
  onStderrLine?: (line: string) => void;
  /** The child is killed (CHILD_TIMEOUT) when it runs longer than this. */
  timeoutMs?: number;
  /** Started under `nice -n <nice>` (a lower CPU priority than ingest: frame grabs). */
  nice?: number;
  env?: NodeJS.ProcessEnv;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** stop() (or the owner's signal) asked for it. */
  requested: boolean;
  /** An exit nobody asked for that failed, or a spawn that failed; null otherwise. */
  error: ChildProcessError | null;
}

export interface Child {
  readonly command: string;
  /** Undefined when the spawn failed. */
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  /** The last stderr lines (at most `stderrLines`), oldest first. */
  readonly stderrTail: readonly string[];
  /** True until the process has exited. */
  readonly running: boolean;
  /** True once stop() was called or the owner's signal aborted. */
  readonly requested: boolean;
  /** Resolves once, when the child has exited (see the module comment); never rejects. */
  readonly exited: Promise<ChildExit>;
  /** Stops the child (idempotent); resolves with its exit. */
  stop(): Promise<ChildExit>;
}

/** Every child alive in this process, with its command and purpose. */
const live = new Map<ChildProcess, { command: string; purpose: string | undefined }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live.keys()) child.kill('SIGKILL');
  });
}

/** Children alive now, by command (a child counts from its spawn until its exit is reaped). */
export function liveChildren(): Map<string, number> {
  const out = new Map<string, number>();
  for (const { command } of live.values()) out.set(command, (out.get(command) ?? 0) + 1);
  return out;
}

/** Children of one command (and purpose, when given) alive now. */
export function liveChildCount(command: string, purpose?: string): number {
  let n = 0;
  for (const c of live.values()) if (c.command === command && (purpose === undefined || c.purpose === purpose)) n++;
  return n;
}

let cachedLimit: number | null | undefined;

/** The soft RLIMIT_NOFILE of this process, or null when it cannot be read (not Linux, unlimited). */
function fdLimit(): number | null {
  if (cachedLimit !== undefined) return cachedLimit;
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    cachedLimit = soft && /^\d+$/.test(soft) ? Number(soft) : null;
  } catch {
    cachedLimit = null;
  }
  return cachedLimit;
}

/** Open descriptors of this process, or null when unknown. One readdir: fine at the rate children start. */
export function openDescriptors(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}

/** Throws SPAWN_NO_DESCRIPTORS when too few descriptors are left to start `command` safely. */
export function assertSpawnHeadroom(command = 'a child process'): void {
  const limit = fdLimit();
  if (limit === null) return;
  const open = openDescriptors();
  if (open !== null && limit - open < SPAWN_RESERVE) {
    throw new ChildProcessError(
      'SPAWN_NO_DESCRIPTORS',
      command,
      `cannot start ${command}: ${open} of ${limit} file descriptors are open (fewer than ${SPAWN_RESERVE} left)`,
    );
  }
}

/** The last non-empty stderr lines, for an error message. */
function tailText(lines: readonly string[], n = 5): string {
  return lines
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .slice(-n)
    .join(' | ');
}

/**
 * Starts a child (see the module comment). Throws ChildProcessError SPAWN_NO_DESCRIPTORS
 * without spawning when descriptors run short, and the signal's reason when the owner's
 * signal is already aborted; every later failure arrives through `exited`.
 */
export function spawnChild(opts: SpawnChildOptions): Child {
  const { command } = opts;
  if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error(`${command} not started: its owner stopped`);
  assertSpawnHeadroom(command);
  installExitHook();
  const file = opts.nice ? 'nice' : opts.file;
  const args = opts.nice ? ['-n', String(opts.nice), opts.file, ...opts.args] : [...opts.args];
  const maxLines = opts.stderrLines ?? 20;
  const tail: string[] = [];
  let requested = false;
  let running = true;
  let timedOut = false;
  let spawnError: Error | null = null;
  let resolveExit!: (exit: ChildExit) => void;
  const exited = new Promise<ChildExit>((r) => (resolveExit = r));

  let child: ChildProcess;
  try {
    child = spawn(file, args, { stdio: [opts.stdin ?? 'ignore', opts.stdout ?? 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) });
  } catch (err) {
    throw new ChildProcessError('SPAWN_FAILED', command, `cannot start ${command}: ${(err as Error).message}`, null, [], { cause: err });
  }
  if (child.pid !== undefined) live.set(child, { command, purpose: opts.purpose });
  // A write to the stdin of a child that died fails with EPIPE: its exit says what happened.
  child.stdin?.on('error', () => undefined);

  let partial = '';
  const addLine = (line: string): void => {
    tail.push(line);
    if (tail.length > maxLines) tail.shift();
    opts.onStderrLine?.(line);
  };
  let stderrEnded = child.stderr === null;
  let onStderrEnd: (() => void) | null = null;
  if (child.stderr) {
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      const lines = (partial + text).split(/\r?\n|\r/);
      partial = lines.pop() ?? '';
      for (const line of lines) addLine(line);
      // A child that never ends a line must not grow this without bound.
      if (partial.length > 64 * 1024) {
        addLine(partial);
        partial = '';
      }
    });
    child.stderr.on('error', () => undefined);
    child.stderr.once('close', () => {
      if (partial !== '') addLine(partial);
      partial = '';
      stderrEnded = true;
      onStderrEnd?.();
    });
  }

  let killTimer: NodeJS.Timeout | null = null;
  const timeout =
    opts.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : null;
  const onAbort = (): void => void stop();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  let settled = false;
  const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
    if (settled) return;
    settled = true;
    running = false;
    live.delete(child);
    if (timeout) clearTimeout(timeout);
    if (killTimer) clearTimeout(killTimer);
    opts.signal?.removeEventListener('abort', onAbort);
    // Nothing more can be written to a dead process; a child's helper that watches the
    // same pipe for EOF (the nats-server wrapper) ends with it.
    child.stdin?.destroy();
    const finish = (): void => {
      let error: ChildProcessError | null = null;
      if (spawnError)
        error = new ChildProcessError('SPAWN_FAILED', command, `cannot start ${command}: ${spawnError.message}`, null, [...tail], { cause: spawnError });
      else if (timedOut)
        error = new ChildProcessError(
          'CHILD_TIMEOUT',
          command,
          `${command} ran past its ${opts.timeoutMs} ms and was killed${tail.length ? `: ${tailText(tail)}` : ''}`,
          { code, signal },
          [...tail],
        );
      else if (!requested && (code !== 0 || signal !== null)) {
        const how = signal !== null ? `was killed with signal ${signal}` : `exited with code ${code}`;
        const words = tailText(tail);
        error = new ChildProcessError('CHILD_EXITED', command, `${command} ${how}${words ? `: ${words}` : ''}`, { code, signal }, [...tail]);
      }
      resolveExit({ code, signal, requested, error });
    };
    // An exit we caused needs no last words (nor waits on a grandchild holding the pipe).
    if (stderrEnded || requested || timedOut) return finish();
    // Its last words may still be in the pipe: read them, but never wait on a grandchild
    // that holds the pipe open.
    const drain = setTimeout(() => {
      onStderrEnd = null;
      finish();
    }, STDERR_DRAIN_MS);
    onStderrEnd = () => {
      clearTimeout(drain);
      finish();
    };
  };
  child.once('exit', (code, signal) => settle(code, signal));
  child.once('error', (err) => {
    // Spawn failed (ENOENT, EACCES): no 'exit' follows. Any other error comes with an exit.
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null && !spawnError) return;
    spawnError = err;
    stderrEnded = true;
    settle(null, null);
  });

  function stop(): Promise<ChildExit> {
    requested = true;
    if (!running) return exited;
    const signal = opts.stopSignal ?? 'SIGKILL';
    child.kill(signal);
    if (signal !== 'SIGKILL' && !killTimer) {
      killTimer = setTimeout(() => child.kill('SIGKILL'), opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS);
      killTimer.unref();
    }
    return exited;
  }

  return {
    command,
    pid: child.pid,
    stdin: child.stdin,
    stdout: child.stdout,
    stderrTail: tail,
    get running() {
      return running;
    },
    get requested() {
      return requested;
    },
    exited,
    stop,
  };
}
