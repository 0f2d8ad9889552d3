/**
 * The S3 test set-up the S3 test files share: a node whose first access key comes from
 * the settings (so its S3 listener starts on a free port), an SDK client for it destroyed
 * at teardown, and the S3 error code a refused call gave.
 */
import type { ExecutionContext } from 'ava';
import { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { startNode, type TestNode } from './recorder.ts';

export const S3_KEY = 'AKIDRECORDERTEST';
export const S3_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

/** A path-style SDK client on `endpoint`, with the settings' key unless told otherwise. */
export function s3Client(
  t: ExecutionContext,
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string } = { accessKeyId: S3_KEY, secretAccessKey: S3_SECRET },
): S3Client {
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
  t.teardown(() => client.destroy());
  return client;
}

/** A node with the S3 listener on a free port; its clock runs `offset.ms` ahead, read at each call so a test can move it. */
export async function s3Node(
  t: ExecutionContext,
  opts: { dataDir?: string; offset?: { ms: number } } = {},
): Promise<TestNode & { s3: string; client: S3Client }> {
  const offset = opts.offset;
  const extra = offset === undefined ? {} : { clock: { nowMs: () => Date.now() + offset.ms } };
  const n = await startNode(t, { s3: '127.0.0.1:0', s3AccessKey: S3_KEY, s3SecretKey: S3_SECRET }, opts.dataDir, extra);
  const s3 = n.node.s3Url;
  t.truthy(s3, 'the S3 listener started');
  return { ...n, s3, client: s3Client(t, s3) };
}

/** The S3 error a call was refused with (its code and HTTP status); fails the test if it succeeded. */
export async function s3Error(t: ExecutionContext, p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  const err = await t.throwsAsync(p);
  if (err instanceof S3ServiceException) return { name: err.name, status: err.$metadata.httpStatusCode };
  return { name: err?.name ?? 'none', status: undefined };
}

/** Only the code of {@link s3Error}. */
export async function s3Code(t: ExecutionContext, p: Promise<unknown>): Promise<string> {
  return (await s3Error(t, p)).name;
}
