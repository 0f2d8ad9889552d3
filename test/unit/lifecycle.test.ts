/**
 * lib/lifecycle.ts: components stop in reverse start order, the signal aborts before
 * the first stop, a failing stop does not keep the others (the data-dir lock) from
 * stopping, nothing starts once the shutdown began, and a parent signal aborting in the
 * middle of a start lets that start finish and stops everything started. The signal
 * reaches components: a back-fill pull ends as the shutdown begins.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackfillManager } from '../../backfill/manager.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { CameraConfig } from '../../index/records.ts';
import { configSchema } from '../../lib/config.ts';
import { RecorderError } from '../../lib/errors.ts';
import { Lifecycle, followSignal } from '../../lib/lifecycle.ts';
import { silentLogger } from '../../lib/log.ts';

test('stops in reverse start order, after aborting the signal, and once however often stop() is called', async (t) => {
  const life = new Lifecycle(silentLogger);
  const events: string[] = [];
  for (const name of ['lock', 'index', 'cameras', 'http']) {
    await life.start(
      name,
      () => events.push(`start ${name}`),
      () => void events.push(`stop ${name} (aborted: ${life.signal.aborted})`),
    );
  }
  t.deepEqual(life.components, ['lock', 'index', 'cameras', 'http']);
  await Promise.all([life.stop(), life.stop()]);
  await life.stop();
  t.deepEqual(events, [
    'start lock',
    'start index',
    'start cameras',
    'start http',
    'stop http (aborted: true)',
    'stop cameras (aborted: true)',
    'stop index (aborted: true)',
    'stop lock (aborted: true)',
  ]);
  t.true(life.signal.reason instanceof RecorderError);
  t.is((life.signal.reason as RecorderError).code, 'SHUTTING_DOWN');
  t.is((life.signal.reason as RecorderError).status, 503);
});

test('a stop that fails does not keep the components started before it from stopping', async (t) => {
  const life = new Lifecycle(silentLogger);
  const stopped: string[] = [];
  await life.start(
    'lock',
    () => 1,
    () => void stopped.push('lock'),
  );
  await life.start(
    'broken',
    () => 2,
    () => {
      throw new Error('boom');
    },
  );
  await life.stop();
  t.deepEqual(stopped, ['lock']);
});

test('once the shutdown began nothing starts: start() throws SHUTTING_DOWN without running', async (t) => {
  const life = new Lifecycle(silentLogger);
  await life.stop();
  let ran = false;
  const err = await t.throwsAsync(life.start('late', () => (ran = true)));
  t.is((err as RecorderError).code, 'SHUTTING_DOWN');
  t.false(ran);
});

test('a parent signal aborting during a start: that start finishes, is stopped with the others, and the next start is refused', async (t) => {
  const parent = new AbortController();
  const life = new Lifecycle(silentLogger, parent.signal);
  const events: string[] = [];
  await life.start(
    'lock',
    () => events.push('start lock'),
    () => void events.push('stop lock'),
  );
  let release!: () => void;
  const slow = life.start(
    'reconcile',
    async () => {
      events.push('start reconcile');
      await new Promise<void>((r) => (release = r));
      events.push('reconcile done');
    },
    () => void events.push('stop reconcile'),
  );
  await new Promise((r) => setImmediate(r));
  parent.abort(); // SIGTERM in the middle of reconcile
  await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(events, ['start lock', 'start reconcile'], 'nothing is stopped under a start still running');
  release();
  const err = await t.throwsAsync(slow);
  t.is((err as RecorderError).code, 'SHUTTING_DOWN');
  await life.stop();
  t.deepEqual(events, ['start lock', 'start reconcile', 'reconcile done', 'stop reconcile', 'stop lock']);
  await t.throwsAsync(
    life.start('http', () => undefined),
    { message: /shutting down/ },
  );
});

test("followSignal: a component's own stop signal aborts with its stop() or with the node's", (t) => {
  const node = new AbortController();
  const a = followSignal(node.signal);
  const b = followSignal(node.signal);
  b.abort();
  t.false(a.signal.aborted);
  t.true(b.signal.aborted);
  t.false(node.signal.aborted, 'a component stopping alone does not stop the node');
  node.abort();
  t.true(a.signal.aborted);
  t.true(followSignal(node.signal).signal.aborted, 'made after the abort: aborted already');
  t.false(followSignal(undefined).signal.aborted);
});

test("the node's signal reaches the back-fill manager: a pull in progress ends when the shutdown begins, before the manager's own stop", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'life-bf-'));
  const index = await RecorderIndex.open(dir);
  t.teardown(async () => {
    await index.close();
    await rm(dir, { recursive: true, force: true });
  });
  const NOW = Date.UTC(2026, 10, 25, 12, 0, 0);
  const camera: CameraConfig = {
    id: 'c',
    pool: 'default',
    streams: { main: 'rtsp://127.0.0.1:1/x' },
    record: { stream: 'main', format: 'mp4' },
    edge: { replayUrl: 'rtsp://127.0.0.1:1/edge', mode: 'onvif', rateControl: false },
  };
  await index.cameras.put('c', camera);
  await index.gaps.put({ camera: 'c', startMs: NOW - 120_000, endMs: NOW - 60_000, state: 'pending', reason: 'camera offline', attempts: 0 });
  const node = new AbortController();
  let pulling: AbortSignal | null = null;
  let pullEnded = false;
  const manager = new BackfillManager({
    index,
    config: configSchema.parse({ dataDir: dir, logLevel: 'silent' }),
    clock: { nowMs: () => NOW },
    log: silentLogger,
    camera: (id) => (id === 'c' ? camera : undefined),
    cameras: () => [camera],
    raiseAlarm: () => undefined,
    publish: () => undefined,
    signal: node.signal,
    // A camera whose replay never ends: the pull lasts until its signal aborts.
    pull: (opts) =>
      new Promise((_, reject) => {
        pulling = opts.signal ?? null;
        opts.signal?.addEventListener('abort', () => {
          pullEnded = true;
          reject(new RecorderError('EDGE_TIMEOUT', 'back-fill stopped: the recorder is shutting down'));
        });
      }),
  });
  t.teardown(() => manager.stop());
  await manager.start();
  await waitUntil(() => pulling !== null);
  t.false(pullEnded);
  node.abort(); // the shutdown begins; the manager's stop() comes later, in its turn
  await waitUntil(() => pullEnded);
  t.true(pulling!.aborted);
  await manager.stop();
  const gap = index.gaps.get('c', NOW - 120_000)!;
  t.not(gap.state, 'fetching', 'the gap was given back');
});

async function waitUntil(probe: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !probe(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!probe()) throw new Error('condition never held');
}
