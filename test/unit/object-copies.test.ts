/**
 * cluster/object-copies.ts against a real HTTP peer that misbehaves on purpose, real
 * object files (buckets/object-files.ts) and a real LMDB catalog: a peer that stops
 * sending mid-body is cut after the idle time (the pull fails cleanly, a read errors);
 * failed pulls of one file wait in one retry however often the file is wanted; a repair
 * asked while a plain pull of the file runs does its own pull after it.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ObjectFiles } from '../../buckets/object-files.ts';
import { ObjectCopies } from '../../cluster/object-copies.ts';
import type { ObjectRecord } from '../../index/buckets.ts';
import { RecorderIndex } from '../../index/db.ts';
import { silentLogger } from '../../lib/log.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

type Mode = 'good' | 'stall' | 'missing' | 'hold';

async function setup(t: ExecutionContext) {
  const dir = await tempDir(t, 'rec-objcopies-');
  const index = await RecorderIndex.open(join(dir, 'index'));
  t.teardown(() => index.close());
  const body = randomBytes(200_000);
  const rec: ObjectRecord = {
    fileId: '0000000000010000000000a1',
    size: body.length,
    etag: createHash('md5').update(body).digest('hex'),
    lastModifiedMs: 1,
    headers: {},
    meta: {},
    node: 'peer',
  };
  await index.buckets.createBucket({ name: 'b', pool: 'default', createdMs: 1, acl: 'private', owner: 'root' });
  await index.buckets.putObject('b', 'k', { ...rec });
  const files = new ObjectFiles(join(dir, 'node'));
  await files.init();
  t.teardown(() => files.stop());

  const peer = { mode: 'good' as Mode, requests: 0, release: null as (() => void) | null };
  const open = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    peer.requests++;
    open.add(res);
    res.on('close', () => open.delete(res));
    if (peer.mode === 'missing') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': String(body.length) });
    if (peer.mode === 'stall') return void res.write(body.subarray(0, body.length / 2)); // and nothing more
    if (peer.mode === 'hold') return void (peer.release = () => res.end(body));
    res.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const res of open) res.destroy();
    server.close();
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const stop = new AbortController();
  const copies = new ObjectCopies({
    nodeId: 'me',
    catalog: index.buckets,
    copiesOf: () => 2,
    liveNodes: () => ['peer'],
    peerHttp: () => url,
    token: () => 'cluster-token',
    files: () => files,
    ask: () => Promise.reject(new Error('no peers to ask in this test')),
    caughtUp: () => Promise.resolve(),
    settleMs: 60_000,
    log: silentLogger,
    signal: stop.signal,
    bodyIdleMs: 300,
  });
  t.teardown(() => {
    stop.abort();
    copies.stop();
  });
  return { body, rec, files, peer, copies };
}

test('a peer that stops sending mid-body is cut after the idle time: the pull fails and leaves nothing, a read errors', async (t) => {
  const { rec, files, peer, copies } = await setup(t);
  peer.mode = 'stall';
  t.false(await copies.fetch('b', rec), 'no node gave the file');
  t.false(files.has('b', rec.fileId));
  t.deepEqual(await readdir(files.tmpDir), [], 'the tmp file went with the pull');

  const read = await copies.read('b', rec, 0, rec.size - 1);
  t.truthy(read);
  const err = await t.throwsAsync(async () => {
    for await (const chunk of read as AsyncIterable<Buffer>) void chunk;
  });
  t.regex(err?.message ?? '', /abort|sent nothing/i);
});

test('failed pulls of one file wait in one retry, however often the file is wanted meanwhile', async (t) => {
  const { rec, peer, copies } = await setup(t);
  peer.mode = 'missing';
  const applied = (): void => copies.applied({ change: { op: 'putObject', bucket: 'b', key: 'k', rec }, origin: 'peer', result: { unlink: [] } });
  applied();
  await waitFor('the first pull failed', () => copies.status().failed === 1 && copies.status().active === 0, 10_000, 10);
  t.is(copies.status().waiting, 1);
  // The log applies the put again (a replay), a scan wants it: the retry waiting will do.
  for (let i = 0; i < 5; i++) applied();
  await waitFor('no pull running', () => copies.status().active === 0 && copies.status().queued === 0, 10_000, 10);
  t.like(copies.status(), { failed: 1, waiting: 1 });
  t.is(peer.requests, 1);
});

test('a repair asked while a plain pull of the file runs pulls again after it, over the bad copy', async (t) => {
  const { body, rec, files, peer, copies } = await setup(t);
  // The scrub found the copy here bad while a plain pull of the file runs.
  peer.mode = 'hold';
  const plain = copies.fetch('b', rec);
  await waitFor('the plain pull asked the peer', () => peer.requests === 1 && peer.release !== null, 10_000, 10);
  const repaired = copies.repair('b', rec);
  t.not(repaired, plain, 'the repair does not ride on the plain pull');
  peer.mode = 'good';
  peer.release!();
  t.true(await plain);
  t.true(await repaired);
  t.is(peer.requests, 2, 'the repair pulled the file itself');
  t.deepEqual((await readFile(files.path('b', rec.fileId))).subarray(0, body.length), body);
});
