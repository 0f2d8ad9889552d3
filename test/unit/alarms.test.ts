/**
 * The alarm queue (lib/alarms.ts) without NATS: an alarm stays queued until a sink
 * confirms it, goes out in the order raised once one does, and the queue is bounded.
 */
import test from 'ava';
import { AlarmBus, type Alarm } from '../../lib/alarms.ts';
import { silentLogger } from '../../lib/log.ts';
import { systemClock } from '../../lib/time.ts';

const offline = (camera: string) => ({ kind: 'camera-offline' as const, camera, message: `${camera} offline` });

async function until(probe: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !probe(); i++) await new Promise((r) => setImmediate(r));
  if (!probe()) throw new Error('condition never held');
}

test('alarms are held while the sink cannot confirm them and delivered in order once it can', async (t) => {
  const bus = new AlarmBus(silentLogger, systemClock);
  bus.raise(offline('before-attach'));
  let up = false;
  const delivered: Alarm[] = [];
  let attempts = 0;
  bus.attach((batch) => {
    attempts++;
    if (!up) return Promise.reject(new Error('disconnected'));
    delivered.push(...batch);
    return Promise.resolve();
  });
  await until(() => attempts === 1);
  bus.raise(offline('a'));
  bus.raise(offline('b'));
  await until(() => bus.queued() === 3);
  t.deepEqual(delivered, [], 'nothing confirmed, nothing dropped');
  up = true;
  bus.wake();
  await until(() => bus.queued() === 0);
  t.deepEqual(
    delivered.map((a) => a.camera),
    ['before-attach', 'a', 'b'],
  );
  // Detached (NATS disconnected): held, even though the sink would work.
  bus.detach();
  bus.raise(offline('c'));
  await new Promise((r) => setImmediate(r));
  t.is(bus.queued(), 1);
  bus.attach((batch) => {
    delivered.push(...batch);
    return Promise.resolve();
  });
  await until(() => bus.queued() === 0);
  t.deepEqual(
    delivered.map((a) => a.camera),
    ['before-attach', 'a', 'b', 'c'],
  );
});

test('the queue keeps the newest 1000 alarms while nothing delivers them', async (t) => {
  const bus = new AlarmBus(silentLogger, systemClock);
  for (let i = 0; i < 1005; i++) bus.raise(offline(`c${i}`));
  t.is(bus.queued(), 1000);
  const delivered: Alarm[] = [];
  bus.attach((batch) => {
    delivered.push(...batch);
    return Promise.resolve();
  });
  await until(() => bus.queued() === 0);
  t.is(delivered.length, 1000);
  t.is(delivered[0]!.camera, 'c5');
  t.is(delivered.at(-1)!.camera, 'c1004');
});
