/**
 * Presigned URLs for the web UI (buckets/presign.ts, buckets/sigv4.ts presignUrl): the
 * same signature the AWS SDK's presigner makes for the same request and instant, and
 * the browser-facing rules (which host the URL names, which origins are the UI).
 */
import test from 'ava';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { isRecorderUi, reachable } from '../../buckets/presign.ts';
import { presignUrl } from '../../buckets/sigv4.ts';

const cred = { accessKeyId: 'AKIDRECORDERTEST', secret: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', user: 'root' };
const NOW = Date.UTC(2026, 11, 4, 9, 30, 0);

const OURS = new Set(['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature']);

/** The SDK's presigned URL for `command`: its signature, and the query it signed beyond the presign fields (x-id, X-Amz-Content-Sha256…). */
async function sdkPresigned(
  presign: (client: S3Client, at: { expiresIn: number; signingDate: Date }) => Promise<string>,
): Promise<{ signature: string; query: Record<string, string> }> {
  const client = new S3Client({
    endpoint: 'http://127.0.0.1:9000',
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: cred.accessKeyId, secretAccessKey: cred.secret },
  });
  try {
    const url = new URL(await presign(client, { expiresIn: 900, signingDate: new Date(NOW) }));
    const query = Object.fromEntries([...url.searchParams].filter(([k]) => !OURS.has(k)));
    return { signature: url.searchParams.get('X-Amz-Signature')!, query };
  } finally {
    client.destroy();
  }
}

test("a presigned GET of a key with spaces and UTF-8 has the AWS SDK's signature", async (t) => {
  const key = 'case 17/Bericht für Ö.txt';
  const sdk = await sdkPresigned((c, at) => getSignedUrl(c, new GetObjectCommand({ Bucket: 'evidence', Key: key }), at));
  const ours = presignUrl({ method: 'GET', origin: 'http://127.0.0.1:9000', path: `/evidence/${key}`, query: sdk.query, cred, nowMs: NOW, expiresS: 900 });
  t.is(new URL(ours).searchParams.get('X-Amz-Signature'), sdk.signature);
});

test("a presigned listing with a prefix and delimiter has the AWS SDK's signature", async (t) => {
  const sdk = await sdkPresigned((c, at) => getSignedUrl(c, new ListObjectsV2Command({ Bucket: 'evidence', Prefix: 'case 17/', Delimiter: '/' }), at));
  t.like(sdk.query, { 'list-type': '2', prefix: 'case 17/', delimiter: '/' });
  const ours = presignUrl({ method: 'GET', origin: 'http://127.0.0.1:9000', path: '/evidence/', query: sdk.query, cred, nowMs: NOW, expiresS: 900 });
  t.is(new URL(ours).searchParams.get('X-Amz-Signature'), sdk.signature);
});

test('the URL names the listener as the browser reaches it; the UI is the HTTP port by any name', (t) => {
  t.is(reachable('http://127.0.0.1:9000', 'recorder.lan:8080'), 'http://127.0.0.1:9000', 'a listener bound to one address is reached there');
  t.is(reachable('http://0.0.0.0:9000', 'recorder.lan:8080'), 'http://recorder.lan:9000', 'a wildcard bind: the name the page came from');
  t.is(reachable('http://[::]:9000', '[fd00::5]:8080'), 'http://[fd00::5]:9000');
  t.true(isRecorderUi('http://recorder.lan:8080', 'http://0.0.0.0:8080'));
  t.false(isRecorderUi('http://evil.example:1234', 'http://127.0.0.1:8080'));
  t.false(isRecorderUi('https://127.0.0.1:8080', 'http://127.0.0.1:8080'), 'another scheme is another origin');
  t.false(isRecorderUi('null', 'http://127.0.0.1:8080'));
});
