/**
 * What a bucket name and an object key may be. Bucket names follow S3's rules (3-63 of
 * a-z 0-9 . -, a letter or digit at both ends, no `..`, not an IP address), which also
 * makes them safe path components. Keys are 1-1024 bytes of UTF-8 as in S3; the
 * recorder also refuses NUL and `.`/`..` path segments, which S3 stores but which
 * turn into path traversal in every tool that copies a bucket to a file system (the
 * AWS CLI's `s3 sync`, rclone). Object files are named by id, never by key.
 */
import { S3Error } from './s3-errors.ts';

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
export const MAX_KEY_BYTES = 1024;

export function bucketNameValid(name: string): boolean {
  return BUCKET.test(name) && !name.includes('..') && !/^\d+\.\d+\.\d+\.\d+$/.test(name) && !name.includes('.-') && !name.includes('-.');
}

export function assertBucketName(name: string): void {
  if (!bucketNameValid(name)) throw new S3Error('InvalidBucketName', 'The specified bucket is not valid.', { BucketName: name });
}

export function assertKey(key: string): void {
  if (key.length === 0) throw new S3Error('InvalidArgument', 'An object key must not be empty');
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES)
    throw new S3Error('KeyTooLongError', 'Your key is too long', { Size: String(Buffer.byteLength(key)), MaxSizeAllowed: '1024' });
  if (key.includes('\0')) throw new S3Error('InvalidArgument', 'An object key must not hold a NUL character');
  if (key.split('/').some((seg) => seg === '..' || seg === '.')) throw new S3Error('InvalidArgument', 'An object key must not hold a "." or ".." path segment');
}
