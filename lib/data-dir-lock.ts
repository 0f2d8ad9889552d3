/**
 * One recorder per data dir. Two recorders on one dir both recorded overlapping
 * segments into the same files and index (issue 13); the second must refuse to start.
 *
 * The lock is a listening Linux abstract-namespace unix socket named after the data
 * dir's real path. The kernel frees it when its process dies in any way (kill -9,
 * power), so there is never a stale lock to clean up, and binding it is atomic, so two
 * recorders starting at the same instant cannot both win. (A pid file needs a liveness
 * guess after a crash; flock(2) is not reachable from Node without a native addon.)
 * Scope: one machine and one network namespace, which is where a data dir is shared.
 *
 * Error: DataDirLockedError, code DATA_DIR_LOCKED.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, realpathSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { RecorderError } from './errors.ts';

export class DataDirLockedError extends RecorderError {
  constructor(readonly dataDir: string) {
    super('DATA_DIR_LOCKED', `another recorder is running on the data dir ${dataDir}: stop it first (one recorder per data dir)`);
    this.name = 'DataDirLockedError';
  }
}

export interface DataDirLock {
  release(): Promise<void>;
}

function lockName(dataDir: string): string {
  mkdirSync(dataDir, { recursive: true });
  const real = realpathSync(dataDir);
  return `\0ipcam-recorder-data-dir:${createHash('sha256').update(real).digest('hex').slice(0, 32)}`;
}

/** Takes the data dir's lock, or throws DataDirLockedError when a live recorder holds it. */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const server: Server = createServer((sock) => sock.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new DataDirLockedError(dataDir) : err));
    server.listen(lockName(dataDir), () => resolve());
  });
  // The lock must not keep a process alive that has nothing else to do.
  server.unref();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
