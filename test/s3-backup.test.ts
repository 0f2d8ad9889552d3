/**
 * Objects of a bucket whose pool has a backup dir (docs/s3.md "Copies"): each object is
 * on both disks when its PUT is answered (PutObject, multipart, CopyObject); a GET of an
 * object whose primary file is gone reads the backup; the audit at start copies a lost
 * primary back, makes a lost backup again and removes backup files no record names; a
 * delete removes both copies.
 */
import test from 'ava';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readFooter } from '../buckets/object-files.ts';
import { tempDir } from './helpers/recorder.ts';
import { s3Node } from './helpers/s3.ts';

/** Every object file under `<root>/buckets/objects/<bucket>`: file id → path. */
async function objectFiles(root: string, bucket: string): Promise<Map<string, string>> {
  const dir = join(root, 'buckets', 'objects', bucket);
  const out = new Map<string, string>();
  for (const fan of await readdir(dir).catch(() => [] as string[])) {
    for (const f of await readdir(join(dir, fan))) out.set(f, join(dir, fan, f));
  }
  return out;
}

test('backup copies of objects: on both disks when answered, read from the backup when the primary is gone, audited at start, deleted together', async (t) => {
  const dir = await tempDir(t);
  const backupDir = await tempDir(t, 'rec-backup-');
  const first = await s3Node(t, { dataDir: dir });
  const pool = await fetch(`${first.http}/api/pools/safe`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ capacityBytes: null, overwrite: 'capacity', backupDir }),
  });
  t.is(pool.status, 200);
  const s3 = first.client;
  await s3.send(new CreateBucketCommand({ Bucket: 'vault', CreateBucketConfiguration: { LocationConstraint: 'safe' as never } }));
  const small = randomBytes(300_000);
  await s3.send(new PutObjectCommand({ Bucket: 'vault', Key: 'a.bin', Body: small }));
  const partA = randomBytes(5 * 1024 * 1024);
  const partB = randomBytes(100_000);
  const up = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'vault', Key: 'big.bin' }));
  const e1 = await s3.send(new UploadPartCommand({ Bucket: 'vault', Key: 'big.bin', UploadId: up.UploadId, PartNumber: 1, Body: partA }));
  const e2 = await s3.send(new UploadPartCommand({ Bucket: 'vault', Key: 'big.bin', UploadId: up.UploadId, PartNumber: 2, Body: partB }));
  await s3.send(
    new CompleteMultipartUploadCommand({
      Bucket: 'vault',
      Key: 'big.bin',
      UploadId: up.UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: e1.ETag },
          { PartNumber: 2, ETag: e2.ETag },
        ],
      },
    }),
  );
  await s3.send(new CopyObjectCommand({ Bucket: 'vault', Key: 'a-copy.bin', CopySource: 'vault/a.bin' }));
  // A bucket of a pool without a backup dir has none.
  await s3.send(new CreateBucketCommand({ Bucket: 'plain' }));
  await s3.send(new PutObjectCommand({ Bucket: 'plain', Key: 'p', Body: 'plain bytes' }));
  t.false(existsSync(join(backupDir, 'buckets', 'objects', 'plain')));

  // Three objects, each on both disks byte for byte (bytes and footer).
  const primaries = await objectFiles(dir, 'vault');
  const backups = await objectFiles(backupDir, 'vault');
  t.is(primaries.size, 3);
  t.deepEqual([...backups.keys()].sort(), [...primaries.keys()].sort());
  for (const [id, path] of primaries) t.true((await readFile(path)).equals(await readFile(backups.get(id)!)), `${id} equal on both disks`);

  // The primary of a.bin lost: the GET reads the backup.
  const get = async (key: string): Promise<Buffer> => {
    const r = await first.client.send(new GetObjectCommand({ Bucket: 'vault', Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  };
  const byKey = new Map<string, string>();
  for (const [id, path] of primaries) byKey.set((await readFooter(path))!.key, id);
  const aFile = primaries.get(byKey.get('a.bin')!)!;
  await rm(aFile);
  t.true((await get('a.bin')).equals(small), 'a.bin read from its backup');
  const big = await get('big.bin');
  t.true(big.equals(Buffer.concat([partA, partB])));
  await first.node.stop();

  // While stopped: big.bin's backup lost too, and a stray file in the backup dir.
  const bigBackup = backups.get(byKey.get('big.bin')!)!;
  await rm(bigBackup);
  const strayDir = join(backupDir, 'buckets', 'objects', 'vault', 'zz');
  await mkdir(strayDir, { recursive: true });
  await writeFile(join(strayDir, '00000000000000zz'), 'no record names me');

  const second = await s3Node(t, { dataDir: dir });
  t.true(existsSync(aFile), 'the lost primary copied back from its backup at start');
  t.true(existsSync(bigBackup), 'the lost backup made again at start');
  t.false(existsSync(join(strayDir, '00000000000000zz')), 'a backup file no record names is removed');
  const after = await objectFiles(backupDir, 'vault');
  for (const [id, path] of await objectFiles(dir, 'vault'))
    t.true((await readFile(path)).equals(await readFile(after.get(id)!)), `${id} equal after the audit`);
  const again = await second.client.send(new GetObjectCommand({ Bucket: 'vault', Key: 'a.bin' }));
  t.true(Buffer.from(await again.Body!.transformToByteArray()).equals(small));

  // A delete removes both copies.
  await second.client.send(new DeleteObjectCommand({ Bucket: 'vault', Key: 'a.bin' }));
  t.false(existsSync(aFile));
  t.false(existsSync(backups.get(byKey.get('a.bin')!)!), 'the backup copy went with the object');
});
