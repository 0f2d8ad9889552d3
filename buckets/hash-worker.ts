/**
 * The body of a hashing worker thread (buckets/upload-hasher.ts starts it): it keeps
 * the digests of the uploads in flight and feeds them the bytes the main thread has
 * written, so MD5 (the ETag every S3 client checks; ~700 MB/s on one core) runs beside
 * the thread that receives and writes. Messages on one port arrive in order, so each
 * upload's bytes are hashed in the order they were sent.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import type { HashReply, HashRequest } from './upload-hasher.ts';

interface State {
  md5: Hash;
  sha256: Hash | null;
  crc32: number | null;
}

const states = new Map<number, State>();
const port = parentPort!;

port.on('message', (m: HashRequest) => {
  if (m.op === 'open') {
    states.set(m.id, { md5: createHash('md5'), sha256: m.sha256 ? createHash('sha256') : null, crc32: m.crc32 ? 0 : null });
    return;
  }
  const state = states.get(m.id);
  if (!state) {
    // A dropped upload's batch still goes back.
    if (m.op === 'update') port.postMessage({ op: 'hashed', id: m.id, batch: m.batch, length: m.length } satisfies HashReply, [m.batch]);
    return;
  }
  if (m.op === 'update') {
    const bytes = new Uint8Array(m.batch, 0, m.length);
    state.md5.update(bytes);
    state.sha256?.update(bytes);
    if (state.crc32 !== null) state.crc32 = crc32(bytes, state.crc32);
    // The batch's memory goes back to be filled again.
    port.postMessage({ op: 'hashed', id: m.id, batch: m.batch, length: m.length } satisfies HashReply, [m.batch]);
    return;
  }
  states.delete(m.id);
  if (m.op === 'digest') {
    port.postMessage({
      op: 'digest',
      id: m.id,
      md5: state.md5.digest('hex'),
      sha256: state.sha256?.digest('hex') ?? null,
      crc32: state.crc32,
    } satisfies HashReply);
  }
});
