/**
 * Whether this process may spawn one more child. Out of file descriptors (EMFILE),
 * Node's spawn returns a child without stdio streams, and fluent-ffmpeg then throws a
 * TypeError on `ffmpegProc.stderr` from inside a callback: an uncaught exception that
 * ended the recorder at the next ffmpeg start (issue 13). Every ffmpeg start asks here
 * first and fails with a typed error instead, which its owner handles like any failed
 * attempt (a camera backs off, a frame request answers 503).
 *
 * A spawn takes up to ~8 descriptors for a moment (pipes for stdio and the exec status
 * pipe); RESERVE keeps room for them and for the sockets and files in flight meanwhile.
 * Reading /proc/self/fd costs one readdir: fine at the rate ffmpeg is started.
 *
 * Error: SpawnError, code SPAWN_NO_DESCRIPTORS.
 */
import { readdirSync, readFileSync } from 'node:fs';

const RESERVE = 64;

export class SpawnError extends Error {
  readonly code = 'SPAWN_NO_DESCRIPTORS';
  constructor(open: number, limit: number) {
    super(`cannot start ffmpeg: ${open} of ${limit} file descriptors are open (fewer than ${RESERVE} left)`);
    this.name = 'SpawnError';
  }
}

let cachedLimit: number | null | undefined;

/** The soft RLIMIT_NOFILE of this process, or null when it cannot be read (not Linux, unlimited). */
function fdLimit(): number | null {
  if (cachedLimit !== undefined) return cachedLimit;
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    cachedLimit = soft && /^\d+$/.test(soft) ? Number(soft) : null;
  } catch {
    cachedLimit = null;
  }
  return cachedLimit;
}

/** Open descriptors of this process, or null when unknown. */
export function openDescriptors(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}

/** Throws SpawnError when too few descriptors are left to start a child safely. */
export function assertSpawnHeadroom(): void {
  const limit = fdLimit();
  if (limit === null) return;
  const open = openDescriptors();
  if (open !== null && limit - open < RESERVE) throw new SpawnError(open, limit);
}
