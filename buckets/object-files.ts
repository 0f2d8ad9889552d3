/**
 * Object files on disk (docs/design/buckets.md):
 *
 *   <data>/buckets/tmp/<fileId>                         an upload in progress
 *   <data>/buckets/objects/<bucket>/<xx>/<fileId>       an object version (xx: the id's last two characters)
 *   <data>/buckets/parts/<uploadId>/<fileId>             a part of a multipart upload in progress (bytes only)
 *
 * A file holds the object's bytes from offset 0, then a footer that describes it
 * (JSON: bucket, key, ETag, size, metadata, time; its length as uint32 LE; `RS3O`), so
 * the file says what it is without the index and ranges need no offset arithmetic.
 *
 * Durability order (invariant 2 for objects): the bytes and the footer are written to
 * tmp/, fdatasync'ed, renamed to the object's name, its folder fsync'ed; only then does
 * the caller commit the catalog record (index/buckets.ts). A crash before the commit
 * leaves a file no record names; the start-up sweep removes it, with every tmp/ file.
 * Replacing or deleting an object commits first and unlinks the old file after; a crash
 * in between leaves a file no record names, removed the same way. So an object is
 * visible only once its bytes are durable, and never half.
 *
 * Parts follow the same order into parts/<uploadId>/ (the part record commits after the
 * rename). Completing an upload copies its parts, in order, into one new tmp file with
 * the footer, syncs and renames it like any object, then commits (object record in,
 * upload and part records out) and only then removes the part folder. The sweep removes
 * part folders of uploads the catalog no longer has, and part files no record names.
 *
 * Backup copies (the bucket's pool has a `backupDir`, typically another disk): each
 * object file, once renamed into place and before its record commits, is copied to
 * `<backupDir>/buckets/objects/<bucket>/<xx>/<fileId>` (tmp, fdatasync, rename, folder
 * fsync), so an acknowledged object is on both disks. A copy that fails (the backup disk
 * gone or full) does not fail the write: it is reported and re-made by the audit
 * (`auditBackups`, at start and every RECORDER_BACKUP_AUDIT_MS), which also copies a
 * lost primary back from its backup and removes backup files no record names. Reads of
 * an object whose primary file is gone come from the backup; deletes unlink both.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { constants } from 'node:fs';
import { access, copyFile, mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { EtagHasher } from './etag.ts';
import { S3Error } from './s3-errors.ts';
import { ReadAheadStream } from '../lib/read-ahead-stream.ts';
import { UploadHasher } from './upload-hasher.ts';

const MAGIC = Buffer.from('RS3O');
/** Bytes gathered before one write to the file (fewer system calls for big objects). */

export interface ObjectFooter {
  bucket: string;
  key: string;
  etag: string;
  size: number;
  lastModifiedMs: number;
  meta: Record<string, string>;
  contentType?: string;
}

export interface WrittenFile {
  fileId: string;
  size: number;
  md5Hex: string;
  md5Base64: string;
  /** Hex SHA-256 of the bytes, when asked for (a signed payload hash to check). */
  sha256Hex?: string;
  /** CRC-32 of the bytes as S3 writes it (base64 of the big-endian value), when asked for. */
  crc32Base64?: string;
}

/** A new object file id: time-ordered (ms, hex) then random, safe in paths and as an S3 version id. */
export function newFileId(nowMs: number): string {
  return `${nowMs.toString(16).padStart(12, '0')}${randomBytes(6).toString('hex')}`;
}

export interface ObjectBackups {
  /** The backup dir of a bucket's pool (null: none). */
  dirOf: (bucket: string) => string | null;
  /** A backup copy could not be made (the write itself went on). */
  failed: (bucket: string, fileId: string, err: Error) => void;
}

const NO_BACKUPS: ObjectBackups = { dirOf: () => null, failed: () => undefined };

export class ObjectFiles {
  readonly root: string;
  readonly tmpDir: string;
  /** Hashes uploads off the main thread (buckets/upload-hasher.ts). */
  private readonly hasher = new UploadHasher();

  constructor(
    dataDir: string,
    private readonly backups: ObjectBackups = NO_BACKUPS,
  ) {
    this.root = join(dataDir, 'buckets');
    this.tmpDir = join(this.root, 'tmp');
  }

  /** Whether the bucket's pool has a backup dir. */
  hasBackup(bucket: string): boolean {
    return this.backups.dirOf(bucket) !== null;
  }

  /** Where the backup copy of an object file goes (null: its pool has no backup dir). */
  backupPath(bucket: string, fileId: string): string | null {
    const dir = this.backups.dirOf(bucket);
    return dir ? join(dir, 'buckets', 'objects', bucket, fileId.slice(-2), fileId) : null;
  }

  /** Copies a renamed object file to its backup (when its pool has one); a failure is reported, not thrown. */
  private async backUp(bucket: string, fileId: string): Promise<void> {
    const to = this.backupPath(bucket, fileId);
    if (!to) return;
    try {
      await copyDurably(this.path(bucket, fileId), to);
    } catch (err) {
      this.backups.failed(bucket, fileId, err as Error);
    }
  }

  bucketDir(bucket: string): string {
    return join(this.root, 'objects', bucket);
  }

  path(bucket: string, fileId: string): string {
    return join(this.bucketDir(bucket), fileId.slice(-2), fileId);
  }

  tmpPath(fileId: string): string {
    return join(this.tmpDir, fileId);
  }

  partDir(uploadId: string): string {
    return join(this.root, 'parts', uploadId);
  }

  partPath(uploadId: string, fileId: string): string {
    return join(this.partDir(uploadId), fileId);
  }

  /** Ends the hashing worker (the listener has stopped taking uploads). */
  async stop(): Promise<void> {
    await this.hasher.stop();
  }

  async init(): Promise<void> {
    await mkdirDurable(this.tmpDir);
    await mkdirDurable(join(this.root, 'objects'));
    await mkdirDurable(join(this.root, 'parts'));
  }

  /**
   * Streams `body` into a tmp file, hashing as it goes; at most `maxBytes`. The file is
   * not yet durable nor named: `finish` adds the footer, syncs and renames it.
   */
  async receive(body: Readable, nowMs: number, opts: { maxBytes: number; sha256?: boolean; crc32?: boolean }): Promise<WrittenFile & { handle: FileHandle }> {
    const fileId = newFileId(nowMs);
    const handle = await open(this.tmpPath(fileId), 'wx', 0o600);
    const digest = this.hasher.begin({ sha256: opts.sha256 === true, crc32: opts.crc32 === true });
    // One batch in flight (written, then hashed off this thread) while the next is received.
    let inFlight: Promise<void> | null = null;
    let batch = this.hasher.batch();
    try {
      let size = 0;
      let filled = 0;
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > opts.maxBytes) throw new S3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.');
        for (let at = 0; at < chunk.length;) {
          const n = chunk.copy(batch, filled, at);
          filled += n;
          at += n;
          if (filled < batch.length) continue;
          await inFlight;
          const full = batch;
          inFlight = writeAll(handle, full).then(() => digest.update(full, full.length, false));
          batch = this.hasher.batch();
          filled = 0;
        }
      }
      await inFlight;
      inFlight = null;
      await writeAll(handle, batch.subarray(0, filled));
      await digest.update(batch, filled, true);
      const { md5Hex, sha256Hex, crc32: crc } = await digest.digest();
      const md5 = Buffer.from(md5Hex, 'hex');
      const crcBuf = Buffer.alloc(4);
      crcBuf.writeUInt32BE((crc ?? 0) >>> 0);
      return {
        handle,
        fileId,
        size,
        md5Hex,
        md5Base64: md5.toString('base64'),
        ...(opts.crc32 ? { crc32Base64: crcBuf.toString('base64') } : {}),
        ...(sha256Hex !== null ? { sha256Hex } : {}),
      };
    } catch (err) {
      await inFlight?.catch(() => undefined);
      digest.drop();
      await handle.close().catch(() => undefined);
      await unlink(this.tmpPath(fileId)).catch(() => undefined);
      throw err;
    }
  }

  /** Writes the footer, fdatasyncs, renames the tmp file to the object's name and fsyncs its folder. */
  async finish(handle: FileHandle, fileId: string, footer: ObjectFooter): Promise<void> {
    const json = Buffer.from(JSON.stringify(footer));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(json.length);
    await this.settle(handle, footer.bucket, fileId, (h) => writeAll(h, Buffer.concat([json, len, MAGIC])));
  }

  /** A received part: fdatasync, rename into its upload's folder, fsync that folder. */
  async finishPart(handle: FileHandle, fileId: string, uploadId: string): Promise<void> {
    try {
      await handle.datasync();
    } finally {
      await handle.close().catch(() => undefined);
    }
    const dest = this.partPath(uploadId, fileId);
    try {
      await mkdirDurable(dirname(dest));
      await rename(this.tmpPath(fileId), dest);
    } catch (err) {
      await unlink(this.tmpPath(fileId)).catch(() => undefined);
      throw err;
    }
    await fsyncDir(dirname(dest));
  }

  async removePart(uploadId: string, fileId: string): Promise<void> {
    await unlink(this.partPath(uploadId, fileId)).catch(() => undefined);
  }

  /** Removes an upload's part folder (after its records are gone). */
  async removeUploadFiles(uploadId: string): Promise<void> {
    await rm(this.partDir(uploadId), { recursive: true, force: true });
  }

  /**
   * Assembles an object from part files, in order, into a new durable object file
   * (footer, fdatasync, rename); returns its id. The parts stay until the caller's commit.
   */
  async assemble(uploadId: string, parts: readonly { fileId: string; size: number }[], nowMs: number, footer: ObjectFooter): Promise<string> {
    const fileId = newFileId(nowMs);
    const handle = await open(this.tmpPath(fileId), 'wx', 0o600);
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    try {
      for (const p of parts) {
        const src = await open(this.partPath(uploadId, p.fileId), 'r');
        try {
          let copied = 0;
          while (copied < p.size) {
            const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, p.size - copied), copied);
            if (bytesRead === 0) throw new Error(`part file ${p.fileId} of upload ${uploadId} is shorter than its record`);
            await writeAll(handle, buf.subarray(0, bytesRead));
            copied += bytesRead;
          }
        } finally {
          await src.close();
        }
      }
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlink(this.tmpPath(fileId)).catch(() => undefined);
      throw err;
    }
    await this.finish(handle, fileId, footer);
    return fileId;
  }

  /**
   * A new object file holding the first `size` bytes of another (CopyObject): copied by
   * the kernel (copy_file_range or a reflink where the file system has them), cut to the
   * bytes, given its own footer, synced and renamed. Returns its id; ENOENT if the source
   * went meanwhile.
   */
  async copy(srcBucket: string, srcFileId: string, size: number, nowMs: number, footer: ObjectFooter): Promise<string> {
    const fileId = newFileId(nowMs);
    const tmp = this.tmpPath(fileId);
    await copyFile(this.path(srcBucket, srcFileId), tmp, constants.COPYFILE_EXCL);
    let handle: FileHandle;
    try {
      handle = await open(tmp, 'r+');
      await handle.truncate(size);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    try {
      const json = Buffer.from(JSON.stringify(footer));
      const len = Buffer.alloc(4);
      len.writeUInt32LE(json.length);
      const tail = Buffer.concat([json, len, MAGIC]);
      let at = 0;
      while (at < tail.length) at += (await handle.write(tail, at, tail.length - at, size + at)).bytesWritten;
      await handle.datasync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    const dest = this.path(footer.bucket, fileId);
    await mkdirDurable(dirname(dest));
    await rename(tmp, dest);
    await fsyncDir(dirname(dest));
    await this.backUp(footer.bucket, fileId);
    return fileId;
  }

  /** Drops an upload that will not be committed (tmp file or already renamed). */
  async discard(bucket: string, fileId: string): Promise<void> {
    await unlink(this.tmpPath(fileId)).catch(() => undefined);
    await unlink(this.path(bucket, fileId)).catch(() => undefined);
    const backup = this.backupPath(bucket, fileId);
    if (backup) await unlink(backup).catch(() => undefined);
  }

  /** Unlinks an object file whose record is gone (after that commit). A missing file is fine. */
  async remove(bucket: string, fileId: string): Promise<void> {
    const backup = this.backupPath(bucket, fileId);
    for (const path of backup ? [this.path(bucket, fileId), backup] : [this.path(bucket, fileId)]) {
      try {
        await unlink(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  /** Whether this node has the object file (or its backup copy): in a cluster, other nodes may hold it instead. */
  has(bucket: string, fileId: string): boolean {
    const backup = this.backupPath(bucket, fileId);
    return existsSync(this.path(bucket, fileId)) || (backup !== null && existsSync(backup));
  }

  /**
   * Takes in an object file copied whole from another node (its bytes and footer, as
   * `finish` left them there): fdatasync'ed as a tmp file, renamed to its name, its
   * folder fsync'ed, then backed up. The caller checks the bytes first.
   */
  async adopt(bucket: string, fileId: string, write: (handle: FileHandle) => Promise<void>): Promise<void> {
    await this.settle(await open(this.tmpPath(fileId), 'w', 0o600), bucket, fileId, write);
  }

  /**
   * The end of every object file's write: the last bytes written to its open tmp file,
   * fdatasync, the rename to its name, its folder fsync'ed, then its backup copy. A
   * failure before the rename removes the tmp file.
   */
  private async settle(handle: FileHandle, bucket: string, fileId: string, write: (handle: FileHandle) => Promise<unknown>): Promise<void> {
    try {
      await write(handle);
      await handle.datasync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlink(this.tmpPath(fileId)).catch(() => undefined);
      throw err;
    }
    await handle.close();
    const dest = this.path(bucket, fileId);
    await mkdirDurable(dirname(dest));
    await rename(this.tmpPath(fileId), dest);
    await fsyncDir(dirname(dest));
    await this.backUp(bucket, fileId);
  }

  /** Bytes [start, end] (inclusive) of an object file: from its backup when the primary file is gone. */
  read(bucket: string, fileId: string, start: number, end: number): ReadAheadStream {
    const primary = this.path(bucket, fileId);
    const backup = this.backupPath(bucket, fileId);
    const from = backup && !existsSync(primary) && existsSync(backup) ? backup : primary;
    return new ReadAheadStream(from, { start, end });
  }

  /**
   * One object file against its backup: a backup missing or of another size is copied
   * again from the primary; a primary missing is copied back from the backup. Returns
   * what was done (null: both there, or neither: nothing to copy from).
   */
  async auditBackup(bucket: string, fileId: string): Promise<'backed-up' | 'restored' | null> {
    const backup = this.backupPath(bucket, fileId);
    if (!backup) return null;
    const primary = this.path(bucket, fileId);
    const [p, b] = await Promise.all([sizeOf(primary), sizeOf(backup)]);
    if (p !== null && p === b) return null;
    if (p !== null) {
      await copyDurably(primary, backup);
      return 'backed-up';
    }
    if (b === null) return null;
    await copyDurably(backup, primary);
    return 'restored';
  }

  /**
   * The scrub of one object file and its backup copy (bit rot, a torn sector, a copy
   * written over by hand): the MD5 of the object's bytes against its ETag when the ETag
   * is that MD5 (an object put whole), else (a multipart ETag is the MD5 of the parts'
   * MD5s, which a whole file cannot show) the two copies against each other. A bad copy
   * is made again from the good one (tmp, fdatasync, rename); what cannot be told or
   * mended is said: `corrupt` (no copy matches the ETag), `copies-differ` (multipart, the
   * copies disagree), `missing` (no file to read: the audit's case; or `held()` says the
   * object was deleted while it was read).
   */
  async scrub(bucket: string, fileId: string, size: number, etag: string, held: () => boolean, partSizes?: readonly number[]): Promise<ScrubResult> {
    const primary = this.path(bucket, fileId);
    const backup = this.backupPath(bucket, fileId);
    // A multipart ETag is computed again from the part sizes when the record has them
    // (objects completed before they were kept: the two copies are only compared).
    const parts = etag.includes('-') && partSizes && partSizes.reduce((n, s) => n + s, 0) === size ? partSizes : null;
    const digest = (path: string): Promise<string | null> => (parts ? multipartEtagOf(path, parts) : md5Of(path, size));
    const p = await digest(primary);
    const b = backup ? await digest(backup) : null;
    // Deleted meanwhile (a delete unlinks one copy, then the other): nothing to judge or copy back.
    if (!held()) return 'missing';
    if (!etag.includes('-') || parts) {
      const primaryGood = p === etag;
      const backupGood = b === etag;
      if (primaryGood && (!backup || backupGood)) return 'ok';
      if (primaryGood && backup) {
        await copyDurably(primary, backup);
        return 'backup-repaired';
      }
      if (backupGood) {
        await copyDurably(backup!, primary);
        return 'primary-repaired';
      }
      return p === null && b === null ? 'missing' : 'corrupt';
    }
    if (p === null) return 'missing';
    return !backup || b === null || p === b ? 'ok' : 'copies-differ';
  }

  /**
   * Backup files of a bucket that no record names (a crash between the copy and the
   * commit, a delete cut short). Only files that changed before `before` (epoch ms) are
   * judged: a write whose change is still on its way to the catalog (the object log's
   * round trip in a cluster) has its backup already.
   */
  async sweepBackups(bucket: string, holds: (fileId: string) => boolean, before = Infinity): Promise<number> {
    const dir = this.backups.dirOf(bucket);
    if (!dir) return 0;
    const root = join(dir, 'buckets', 'objects', bucket);
    let removed = 0;
    for (const fan of await readdir(root).catch(() => [] as string[])) {
      for (const f of await readdir(join(root, fan)).catch(() => [] as string[])) {
        if (holds(f)) continue;
        const path = join(root, fan, f);
        if (before !== Infinity && ((await stat(path).catch(() => null))?.ctimeMs ?? Infinity) >= before) continue;
        await unlink(path).catch(() => undefined);
        removed++;
      }
    }
    return removed;
  }

  /** Removes an empty bucket's folder. */
  async removeBucketDir(bucket: string): Promise<void> {
    await rm(this.bucketDir(bucket), { recursive: true, force: true });
  }

  /** Removes every tmp/ file (uploads and pulls cut by a crash or a stop): at start, before any request. Returns how many. */
  async sweepTmp(): Promise<number> {
    let tmp = 0;
    for (const f of await readdir(this.tmpDir)) {
      await rm(join(this.tmpDir, f), { recursive: true, force: true });
      tmp++;
    }
    return tmp;
  }

  /**
   * The start-up sweep: every object file the catalog does not hold (`holds`), part files
   * no upload names, and the folders of buckets that no longer exist. `before` (epoch ms):
   * only files whose inode changed before then are judged (in a cluster the sweep runs
   * once the object log is caught up, while requests and pulls already write new files,
   * each named by the catalog only once its change is applied). Returns what went.
   */
  async sweep(
    holds: (fileId: string) => boolean,
    bucketExists: (bucket: string) => boolean,
    /** Uploads in progress, with the part files their records name. */
    uploads: ReadonlyMap<string, ReadonlySet<string>>,
    before = Infinity,
  ): Promise<{ orphans: number; parts: number; lost: Map<string, { fileId: string; footer: ObjectFooter }[]> }> {
    const judged = async (path: string): Promise<boolean> => before === Infinity || ((await stat(path).catch(() => null))?.ctimeMs ?? Infinity) < before;
    let orphans = 0;
    const lost = new Map<string, { fileId: string; footer: ObjectFooter }[]>();
    const objects = join(this.root, 'objects');
    for (const bucket of await readdir(objects)) {
      const dir = join(objects, bucket);
      const known = bucketExists(bucket);
      const found: { fileId: string; footer: ObjectFooter }[] = [];
      let kept = 0;
      for (const fan of await readdir(dir)) {
        for (const f of await readdir(join(dir, fan))) {
          if (holds(f)) continue;
          const path = join(dir, fan, f);
          if (!(await judged(path))) {
            kept++;
            continue;
          }
          // A bucket the catalog does not know at all: the catalog was lost (a reindex),
          // not a crash in one write. Its files say what they are: kept to be recovered.
          const footer = known ? null : await readFooter(path);
          if (footer && footer.bucket === bucket) {
            found.push({ fileId: f, footer });
            continue;
          }
          await unlink(path);
          orphans++;
        }
      }
      if (found.length > 0) lost.set(bucket, found);
      else if (!known && kept === 0 && (await judged(dir))) await rm(dir, { recursive: true, force: true });
    }
    let parts = 0;
    const partsRoot = join(this.root, 'parts');
    for (const uploadId of await readdir(partsRoot)) {
      const held = uploads.get(uploadId);
      const dir = join(partsRoot, uploadId);
      let kept = 0;
      for (const f of await readdir(dir)) {
        if (held?.has(f)) continue;
        if (!(await judged(join(dir, f)))) {
          kept++;
          continue;
        }
        await unlink(join(dir, f));
        parts++;
      }
      if (!held && kept === 0 && (await judged(dir))) await rm(dir, { recursive: true, force: true });
    }
    return { orphans, parts, lost };
  }
}

async function sizeOf(path: string): Promise<number | null> {
  return stat(path).then(
    (s) => s.size,
    () => null,
  );
}

/** What a scrub found and did (ObjectFiles.scrub). */
export type ScrubResult = 'ok' | 'backup-repaired' | 'primary-repaired' | 'corrupt' | 'copies-differ' | 'missing';

/** Hex MD5 of the first `size` bytes of a file; null when it is missing or shorter. */
async function md5Of(path: string, size: number): Promise<string | null> {
  const hash = createHash('md5');
  let read = 0;
  try {
    if (size > 0) {
      for await (const chunk of createReadStream(path, { start: 0, end: size - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        read += chunk.length;
      }
    } else await access(path);
  } catch {
    return null;
  }
  return read === size ? hash.digest('hex') : null;
}

/** The multipart ETag of a file's first bytes cut into parts of these sizes (buckets/etag.ts); null when it is missing or shorter. */
async function multipartEtagOf(path: string, partSizes: readonly number[]): Promise<string | null> {
  const total = partSizes.reduce((n, s) => n + s, 0);
  const etag = new EtagHasher(partSizes);
  try {
    if (total > 0) {
      for await (const chunk of createReadStream(path, { start: 0, end: total - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) etag.update(chunk);
    } else await access(path);
  } catch {
    return null;
  }
  return etag.bytes === total ? etag.digest() : null;
}

/** `from` copied to `to` durably: a tmp file beside it, fdatasync, rename, folder fsync. */
async function copyDurably(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  const tmp = `${to}.copy-tmp`;
  await copyFile(from, tmp);
  const h = await open(tmp, 'r+');
  try {
    await h.datasync();
  } finally {
    await h.close();
  }
  await rename(tmp, to);
  await fsyncDir(dirname(to));
}

/** The footer of an object file (null if it has none or it does not parse). */
export async function readFooter(path: string): Promise<ObjectFooter | null> {
  const h = await open(path, 'r');
  try {
    const { size } = await h.stat();
    if (size < 8) return null;
    const tail = Buffer.alloc(8);
    await h.read(tail, 0, 8, size - 8);
    if (!tail.subarray(4).equals(MAGIC)) return null;
    const len = tail.readUInt32LE(0);
    if (len > size - 8 || len > 1024 * 1024) return null;
    const json = Buffer.alloc(len);
    await h.read(json, 0, len, size - 8 - len);
    const f = JSON.parse(json.toString('utf8')) as ObjectFooter;
    return typeof f.bucket === 'string' && typeof f.key === 'string' && f.size === size - 8 - len ? f : null;
  } catch {
    return null;
  } finally {
    await h.close();
  }
}

async function writeAll(handle: FileHandle, all: Buffer): Promise<void> {
  let at = 0;
  while (at < all.length) {
    const { bytesWritten } = await handle.write(all, at, all.length - at);
    at += bytesWritten;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** mkdir -p, and each folder it made synced into its parent (the names survive a crash). */
async function mkdirDurable(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    await fsyncDir(dirname(d));
    if (d === first) break;
  }
}
