/**
 * The S3 scrub (docs/s3.md "Copies"): every object read back against its MD5 and its
 * backup copy. A copy whose bytes changed on disk (same size, so the hourly audit does
 * not see it) is made again from the good one (a multipart object's ETag is computed
 * again from its part sizes); an object with no good copy raises `object-corrupt`; a
 * clean store is left as it is.
 */
import test from 'ava';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Alarm } from '../lib/alarms.ts';
import { tempDir, waitFor } from './helpers/recorder.ts';
import { s3Node } from './helpers/s3.ts';

/** The one object file under `<root>/buckets/objects/<bucket>` whose footer names `key`. */
async function fileOf(root: string, bucket: string, key: string): Promise<string> {
  const dir = join(root, 'buckets', 'objects', bucket);
  for (const fan of await readdir(dir)) {
    for (const f of await readdir(join(dir, fan))) {
      const path = join(dir, fan, f);
      if ((await readFile(path)).includes(Buffer.from(`"key":${JSON.stringify(key)}`))) return path;
    }
  }
  throw new Error(`no file of ${bucket}/${key} under ${root}`);
}

/** Flips one byte of a file in place (its size stays: bit rot, not a lost file). */
async function flipByte(path: string, at: number): Promise<void> {
  const bytes = await readFile(path);
  bytes[at] = bytes[at]! ^ 0xff;
  await writeFile(path, bytes);
}

test('the scrub mends a copy whose bytes changed from the good one, and alarms where no copy is good', async (t) => {
  const dataDir = await tempDir(t);
  const backupDir = await tempDir(t, 'rec-backup-');
  const n = await s3Node(t, { dataDir });
  const alarms: Alarm[] = [];
  const sub = n.nc.subscribe('rec.v1.alarm.object-corrupt');
  void (async () => {
    for await (const m of sub) alarms.push(JSON.parse(m.string()) as Alarm);
  })();
  const pool = await fetch(`${n.http}/api/pools/safe`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ capacityBytes: null, overwrite: 'capacity', backupDir }),
  });
  t.is(pool.status, 200);
  const s3 = n.client;
  await s3.send(new CreateBucketCommand({ Bucket: 'vault', CreateBucketConfiguration: { LocationConstraint: 'safe' as never } }));
  const a = randomBytes(300_000);
  const b = randomBytes(200_000);
  await s3.send(new PutObjectCommand({ Bucket: 'vault', Key: 'a.bin', Body: a }));
  await s3.send(new PutObjectCommand({ Bucket: 'vault', Key: 'b.bin', Body: b }));
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
          { PartNumber: 1, ETag: e1.ETag! },
          { PartNumber: 2, ETag: e2.ETag! },
        ],
      },
    }),
  );
  const server = n.node.s3!;
  t.like(await server.scrub(), { checked: 3, repaired: 0, corrupt: 0, missing: 0 }, 'a clean store');

  // a.bin rots on the data disk, b.bin on the backup disk: each made again from the other.
  const aPrimary = await fileOf(dataDir, 'vault', 'a.bin');
  const bBackup = await fileOf(backupDir, 'vault', 'b.bin');
  await flipByte(aPrimary, 1000);
  await flipByte(bBackup, 5);
  t.like(await server.scrub(), { checked: 3, repaired: 2, corrupt: 0 });
  const got = await s3.send(new GetObjectCommand({ Bucket: 'vault', Key: 'a.bin' }));
  t.true(Buffer.from(await got.Body!.transformToByteArray()).equals(a), 'a.bin reads as it was put');
  t.true((await readFile(bBackup)).subarray(0, b.length).equals(b), "b.bin's backup is whole again");

  // Both copies of a.bin rot: nothing tells the good copy. big.bin's backup rots: its
  // ETag, computed again from the part sizes its record keeps, tells the primary is good.
  await flipByte(aPrimary, 7);
  await flipByte(await fileOf(backupDir, 'vault', 'a.bin'), 7);
  const bigBackup = await fileOf(backupDir, 'vault', 'big.bin');
  await flipByte(bigBackup, 4_000_000);
  t.like(await server.scrub(), { checked: 3, repaired: 1, corrupt: 1 });
  await waitFor('an object-corrupt alarm', () => Promise.resolve(alarms.length >= 1 ? true : null), 20_000);
  // Only a.bin: the copies mended raised none.
  t.deepEqual(
    alarms.map((x) => [x.kind, x.details?.key, x.details?.found]),
    [['object-corrupt', 'a.bin', 'corrupt']],
  );
  t.true((await readFile(bigBackup)).subarray(0, partA.length).equals(partA), "big.bin's backup is whole again");

  // Both copies of big.bin rot: no copy matches its multipart ETag.
  await flipByte(await fileOf(dataDir, 'vault', 'big.bin'), 10);
  await flipByte(bigBackup, 10);
  t.like(await server.scrub(), { checked: 3, repaired: 0, corrupt: 2 });
  await waitFor('two more object-corrupt alarms', () => Promise.resolve(alarms.length >= 3 ? true : null), 20_000);
  t.deepEqual(
    alarms
      .slice(1)
      .map((x) => [x.details?.key, x.details?.found])
      .sort(),
    [
      ['a.bin', 'corrupt'],
      ['big.bin', 'corrupt'],
    ],
  );
});
