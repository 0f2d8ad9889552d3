/**
 * An S3 request passed whole to another node's S3 listener (in a cluster: a part of a
 * multipart upload that another node created, docs/design/buckets.md "In a cluster").
 * The method, target and every header go as they came, Host and Authorization included,
 * so the signature the client made checks there too; the body streams through, and the
 * answer (status, headers, body) streams back unchanged. Marked `x-recorder-proxied`, so
 * the node asked answers itself and never passes it on again.
 */
import { request } from 'node:http';
import type { S3Request } from './request.ts';
import { S3Error } from './s3-errors.ts';

export const PROXIED_HEADER = 'x-recorder-proxied';

export async function passOn(r: S3Request, target: { node: string; s3: string }): Promise<void> {
  const url = new URL(r.req.url ?? '/', target.s3);
  await new Promise<void>((resolve, reject) => {
    const out = request(
      { host: url.hostname, port: url.port, method: r.method, path: r.req.url ?? '/', headers: { ...r.req.headers, [PROXIED_HEADER]: target.node } },
      (res) => {
        if (r.res.headersSent) return void res.resume();
        r.res.writeHead(res.statusCode ?? 502, { ...res.headers, 'x-recorder-node': target.node });
        res.pipe(r.res);
        res.once('end', resolve);
        res.once('error', (err) => {
          r.res.destroy(err);
          resolve();
        });
      },
    );
    out.once('error', (err) => {
      if (r.res.headersSent) {
        r.res.destroy(err);
        resolve();
      } else reject(new S3Error('ServiceUnavailable', `node ${target.node}, which holds this multipart upload, did not answer (${err.message}); try again`));
    });
    r.res.once('close', () => out.destroy());
    r.req.pipe(out);
  });
}
