/**
 * buckets/etag.ts: S3's ETag of streamed bytes, plain and multipart, is the same however
 * the bytes are cut into chunks, and matches the MD5 (of the parts' MD5s) computed whole.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { EtagHasher } from '../../buckets/etag.ts';

const md5 = (b: Buffer): Buffer => createHash('md5').update(b).digest();

function inChunks(body: Buffer, h: EtagHasher): string {
  for (let at = 0; at < body.length;) {
    const n = Math.min(body.length - at, 1 + Math.floor(Math.random() * 70_000));
    h.update(body.subarray(at, at + n));
    at += n;
  }
  return h.digest();
}

test('a plain ETag is the MD5 of the bytes, whatever the chunks', (t) => {
  const body = randomBytes(300_001);
  t.is(inChunks(body, new EtagHasher()), md5(body).toString('hex'));
  t.is(new EtagHasher().digest(), md5(Buffer.alloc(0)).toString('hex'));
});

test('a multipart ETag is the MD5 of the parts’ MD5s and their count, whatever the chunks', (t) => {
  const sizes = [100_000, 100_000, 12_345];
  const parts = sizes.map((n) => randomBytes(n));
  const want = `${md5(Buffer.concat(parts.map(md5))).toString('hex')}-3`;
  for (let i = 0; i < 5; i++) t.is(inChunks(Buffer.concat(parts), new EtagHasher(sizes)), want);
  // Bytes past the last part are not the object's.
  const h = new EtagHasher(sizes);
  h.update(Buffer.concat([...parts, Buffer.from('footer')]));
  t.is(h.digest(), want);
});
