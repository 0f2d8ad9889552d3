/**
 * A failed LMDB commit must not end the process (issue 13 item 1).
 *
 * What lmdb-js 3.5.6 does when an asynchronous commit fails (a full disk: ENOSPC while
 * writing a page; an I/O error): every write promise of the batch rejects with
 * `Error('Commit failed (see commitError for details)')` whose `commitError` is a second
 * promise that rejects with the real error (errno in `code`). Two of those promises
 * reject with no handler whatever the caller does: `commitError` unless the caller
 * reads it, and the promise of the batch's own first write instruction, which lmdb-js
 * creates internally (write.js, `writeBatchStart`) and never hands out. Node's default
 * for an unhandled rejection is to end the process: one full disk, one dead recorder,
 * and a restart onto the still-full disk died again at its first commit.
 *
 * So, per process, `guardCommitRejections()` installs an `unhandledRejection` listener
 * that takes exactly these rejections, and the STORAGE_IO errors the index's stores
 * turn them into (`typedCommit`) on writes nobody awaited (all are also seen, with
 * their cause, by the index's own observer: index/db.ts), and leaves every other one
 * to Node's default (it rethrows when it is the only listener, which ends the process
 * as before).
 */
import { statfsSync } from 'node:fs';
import { RecorderError } from '../lib/errors.ts';

const COMMIT_FAILED = 'Commit failed';

/** A commit-failure rejection of lmdb-js (its `commitError` carries the cause). */
export function isCommitFailure(err: unknown): err is Error & { commitError: Promise<never> } {
  return err instanceof Error && err.message.startsWith(COMMIT_FAILED) && 'commitError' in err;
}

/**
 * The rejection of lmdb-js's `commitError` promise itself: an lmdb error raised in
 * write.js (`lmdbError(status)`), rejected on a promise lmdb-js keeps a `reject` on.
 */
function isCommitCause(err: unknown, promise: Promise<unknown>): boolean {
  return err instanceof Error && typeof (promise as { reject?: unknown }).reject === 'function' && /[/\\]lmdb[/\\]/.test(err.stack ?? '');
}

export interface CommitCause {
  /** ENOSPC, EDQUOT, EIO, MDB_MAP_FULL, …, or UNKNOWN. */
  errno: string;
  message: string;
  /** The disk (or the map) is full: space must be made for commits to succeed again. */
  full: boolean;
}

const ERRNO: Record<number, string> = { 28: 'ENOSPC', 122: 'EDQUOT', 5: 'EIO', 27: 'EFBIG', 30: 'EROFS', 12: 'ENOMEM', [-30792]: 'MDB_MAP_FULL' };

/**
 * What made a commit fail (waits briefly for lmdb-js to reject `commitError`). `dir`:
 * the index's directory, to tell a short write on a full disk from an I/O error.
 */
export async function commitCause(err: Error & { commitError?: Promise<never> }, dir?: string, waitMs = 1000): Promise<CommitCause> {
  let timer: NodeJS.Timeout | undefined;
  const cause = await Promise.race([
    (err.commitError ?? Promise.reject(err)).then(
      () => null,
      (e: unknown) => e,
    ),
    new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), waitMs);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
  const described = describeCause(cause);
  return described.errno === 'EIO' && dir !== undefined && diskFull(dir)
    ? { errno: 'ENOSPC', message: `${described.message}: a short write, the disk is full`, full: true }
    : described;
}

/**
 * LMDB reports a page write that fit only in part as EIO (mdb.c, mdb_page_flush: "short
 * write"); on a disk with no room left that is the disk being full, and must be handled
 * as such (the reserve released, space made: actors/storage-supervisor.ts).
 */
function diskFull(dir: string): boolean {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize < SHORT_WRITE_FULL_BYTES;
  } catch {
    return false;
  }
}

/** Free space under which an EIO of a commit is taken for a short write on a full disk. */
const SHORT_WRITE_FULL_BYTES = 64 * 1024;

export function describeCause(cause: unknown): CommitCause {
  if (!(cause instanceof Error)) return { errno: 'UNKNOWN', message: 'commit failed for an unknown reason', full: false };
  const code = (cause as { code?: unknown }).code;
  const errno =
    typeof code === 'number'
      ? (ERRNO[code] ?? `errno ${code}`)
      : typeof code === 'string'
        ? code
        : /No space left/i.test(cause.message)
          ? 'ENOSPC'
          : /MAP_FULL/.test(cause.message)
            ? 'MDB_MAP_FULL'
            : 'UNKNOWN';
  // lmdb-js appends its buffer addresses to the message: keep the first sentence.
  const message = cause.message.split(/: Attempting|\n/)[0]!.trim();
  return { errno, message, full: errno === 'ENOSPC' || errno === 'EDQUOT' || errno === 'MDB_MAP_FULL' || errno === 'EFBIG' };
}

/** The error a caller of the index sees for a failed commit: STORAGE_IO, with the errno. */
export function indexWriteError(cause: CommitCause, original?: unknown): RecorderError {
  return new RecorderError('STORAGE_IO', `index commit failed: ${cause.errno} (${cause.message})`, {
    cause: original,
    details: { errno: cause.errno, index: true },
  });
}

let installed = false;

/** Installs the process-wide listener once (idempotent; every index open calls it). */
export function guardCommitRejections(): void {
  if (installed) return;
  installed = true;
  process.on('unhandledRejection', (reason, promise) => {
    if (isCommitFailure(reason)) {
      reason.commitError.catch(() => undefined);
      return;
    }
    if (isCommitCause(reason, promise)) return;
    // The same failure as our stores type it (typedCommit), on a write nobody awaited.
    if (isIndexWriteError(reason)) return;
    // Not ours: what Node would have done without a listener (others may be listening: ava).
    if (process.listenerCount('unhandledRejection') === 1) throw reason;
  });
}

/** A failed index commit as the stores report it (STORAGE_IO from typedCommit). */
export function isIndexWriteError(err: unknown): boolean {
  if (!(err instanceof RecorderError) || err.code !== 'STORAGE_IO') return false;
  return (err.details as { index?: boolean } | undefined)?.index === true;
}

/** A write of the index failed because the disk (or the map) is full. */
export function isIndexFullError(err: unknown): boolean {
  if (!isIndexWriteError(err)) return false;
  const d = (err as RecorderError).details as { errno?: string };
  return describeCause(Object.assign(new Error(''), { code: d.errno })).full;
}

/** A write's promise whose commit failure rejects as STORAGE_IO with its errno (`dir`: see commitCause). */
export function typedCommit<T>(p: Promise<T>, dir?: string): Promise<T> {
  return p.then(undefined, async (err: unknown) => {
    throw isCommitFailure(err) ? indexWriteError(await commitCause(err, dir), err) : err;
  });
}
