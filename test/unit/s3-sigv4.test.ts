/**
 * SigV4 and aws-chunked against AWS's own published examples (S3 API reference,
 * "Signature Calculations for the Authorization Header", "… Query String
 * Authentication" and "Transferring Payload in Multiple Chunks"): the same secret, the
 * same requests, the signatures AWS printed. A mismatch here is a bug of ours, not a
 * disagreement between two copies of our own reading of the spec.
 */
import test from 'ava';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { AwsChunkedDecoder } from '../../buckets/aws-chunked.ts';
import { S3Error } from '../../buckets/s3-errors.ts';
import { verifyHeaderAuth, verifyQueryAuth, type Credential } from '../../buckets/sigv4.ts';

const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const cred: Credential = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secret: SECRET, user: 'root' };
const lookup = (id: string): Credential | undefined => (id === cred.accessKeyId ? cred : undefined);
const NOW = Date.UTC(2013, 4, 24, 0, 0, 0);

function request(method: string, raw: [string, string][]): IncomingMessage {
  const headers: Record<string, string> = {};
  for (const [k, v] of raw) headers[k.toLowerCase()] = v;
  return { method, headers, rawHeaders: raw.flat() } as unknown as IncomingMessage;
}

test('header form: the GET Object example (Range, empty payload hash)', (t) => {
  const sig = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41';
  const raw: [string, string][] = [
    ['Host', 'examplebucket.s3.amazonaws.com'],
    ['Range', 'bytes=0-9'],
    ['x-amz-content-sha256', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
    ['x-amz-date', '20130524T000000Z'],
  ];
  const auth = `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=${sig}`;
  const v = verifyHeaderAuth(request('GET', [...raw, ['Authorization', auth]]), '/test.txt', '', lookup, NOW);
  t.is(v.seedSignature, sig);
  const bad = auth.replace(sig, sig.replace(/^f/, 'e'));
  const err = t.throws<S3Error>(() => verifyHeaderAuth(request('GET', [...raw, ['Authorization', bad]]), '/test.txt', '', lookup, NOW));
  t.is(err.code, 'SignatureDoesNotMatch');
  // The same request an hour late is too skewed; another key is unknown.
  t.is(
    t.throws<S3Error>(() => verifyHeaderAuth(request('GET', [...raw, ['Authorization', auth]]), '/test.txt', '', lookup, NOW + 3_600_000)).code,
    'RequestTimeTooSkewed',
  );
  t.is(
    t.throws<S3Error>(() =>
      verifyHeaderAuth(request('GET', [...raw, ['Authorization', auth.replace('AKIAIOSFODNN7EXAMPLE', 'AKIAOTHER')]]), '/test.txt', '', lookup, NOW),
    ).code,
    'InvalidAccessKeyId',
  );
});

test('query form: the presigned GET example, and its expiry', (t) => {
  const query =
    'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404';
  const req = request('GET', [['Host', 'examplebucket.s3.amazonaws.com']]);
  const v = verifyQueryAuth(req, '/test.txt', query, new URLSearchParams(query), lookup, NOW + 1000);
  t.is(v.cred.user, 'root');
  const late = t.throws<S3Error>(() => verifyQueryAuth(req, '/test.txt', query, new URLSearchParams(query), lookup, NOW + 86_401_000));
  t.is(late.code, 'AccessDenied');
  t.is(late.message, 'Request has expired');
});

function chunkedExample(): { req: IncomingMessage; body: Buffer } {
  const seed = '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9';
  const raw: [string, string][] = [
    ['Host', 's3.amazonaws.com'],
    ['x-amz-date', '20130524T000000Z'],
    ['x-amz-storage-class', 'REDUCED_REDUNDANCY'],
    [
      'Authorization',
      `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=${seed}`,
    ],
    ['x-amz-content-sha256', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD'],
    ['Content-Encoding', 'aws-chunked'],
    ['x-amz-decoded-content-length', '66560'],
    ['Content-Length', '66824'],
  ];
  const body = Buffer.concat([
    Buffer.from('10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n'),
    Buffer.alloc(65536, 'a'),
    Buffer.from('\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n'),
    Buffer.alloc(1024, 'a'),
    Buffer.from('\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n'),
  ]);
  return { req: request('PUT', raw), body };
}

async function decode(req: IncomingMessage, body: Buffer, pieces: number): Promise<Buffer> {
  const v = verifyHeaderAuth(req, '/examplebucket/chunkObject.txt', '', lookup, NOW);
  const decoder = new AwsChunkedDecoder(v, 66560);
  const step = Math.ceil(body.length / pieces);
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += step) parts.push(body.subarray(i, i + step));
  Readable.from(parts).pipe(decoder);
  const out: Buffer[] = [];
  for await (const c of decoder as AsyncIterable<Buffer>) out.push(c);
  return Buffer.concat(out);
}

test('aws-chunked: the 66560-byte streaming example decodes, whatever the read sizes', async (t) => {
  const { req, body } = chunkedExample();
  t.is(body.length, 66824);
  for (const pieces of [1, 7, 997]) t.deepEqual(await decode(req, body, pieces), Buffer.alloc(66560, 'a'));
});

test('aws-chunked: a changed byte, a cut body or a wrong length is refused', async (t) => {
  const { req, body } = chunkedExample();
  const tampered = Buffer.from(body);
  tampered[200] = 'b'.charCodeAt(0);
  t.is((await t.throwsAsync<S3Error>(decode(req, tampered, 3))).code, 'SignatureDoesNotMatch');
  const cut = body.subarray(0, 66000);
  t.is((await t.throwsAsync<S3Error>(decode(req, cut, 3))).code, 'IncompleteBody');
});
