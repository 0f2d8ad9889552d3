/**
 * Pure logic of issue 8: the role/pool matrix, password and token hashing, the health
 * sampler's thresholds (injected readings), the progress bar, the bitrate estimate.
 */
import test from 'ava';
import { ACTIONS, authorize, authorizeCamera, can, type Action, type Principal } from '../../security/access.ts';
import { hashPassword, secretEquals, verifyPassword } from '../../security/passwords.ts';
import { HealthSampler, type HealthReading } from '../../ops/health-sampler.ts';
import { ProgressBar, renderBar } from '../../lib/progress.ts';
import { bitrateOf } from '../../ops/metrics.ts';
import { encodeGops } from '../../index/gop-table.ts';
import type { AlarmInput } from '../../lib/alarms.ts';
import type { RecorderError } from '../../lib/errors.ts';

const viewerA: Principal = { name: 'v', role: 'viewer', pools: ['A'] };
const operatorA: Principal = { name: 'o', role: 'operator', pools: ['A'] };
const operatorAll: Principal = { name: 'o2', role: 'operator', pools: ['*'] };
const admin: Principal = { name: 'a', role: 'admin', pools: [] };

function code(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as RecorderError).code;
  }
}

test('roles: viewer reads and plays, operator also writes and locks, only admin deletes and administers', (t) => {
  const allowed = (p: Principal): Action[] => ACTIONS.filter((a) => can(p, a, 'A'));
  t.deepEqual(allowed(viewerA), ['read', 'play']);
  t.deepEqual(allowed(operatorA), ['read', 'play', 'write', 'lock']);
  t.deepEqual(allowed(admin), [...ACTIONS]);
  t.deepEqual(
    ACTIONS.filter((a) => can(viewerA, a, 'B')),
    [],
    'nothing at all in another pool',
  );
  t.deepEqual(
    ACTIONS.filter((a) => can(operatorA, a, 'B')),
    [],
  );
  t.deepEqual(
    ACTIONS.filter((a) => can(operatorAll, a, 'B')),
    ['read', 'play', 'write', 'lock'],
    '* binds every pool',
  );
});

test('camera checks hide other pools (404) and refuse missing rights (403)', (t) => {
  const camB = { id: 'camB', pool: 'B' };
  const camA = { id: 'camA', pool: 'A' };
  t.is(
    code(() => authorizeCamera(viewerA, 'read', camB)),
    'CAMERA_NOT_FOUND',
  );
  t.is(
    code(() => authorizeCamera(viewerA, 'lock', camB)),
    'CAMERA_NOT_FOUND',
    'not even "forbidden": B does not exist for A',
  );
  t.is(
    code(() => authorizeCamera(viewerA, 'lock', camA)),
    'FORBIDDEN',
  );
  t.is(
    code(() => authorizeCamera(operatorA, 'delete', camA)),
    'FORBIDDEN',
  );
  t.is(
    code(() => authorizeCamera(operatorA, 'lock', camA)),
    undefined,
  );
  t.is(
    code(() => authorizeCamera(admin, 'delete', camB)),
    undefined,
  );
  t.is(
    code(() => authorize(operatorA, 'admin')),
    'FORBIDDEN',
  );
});

test('passwords: salted scrypt, verified timing-safe; malformed hashes never match', async (t) => {
  const h1 = await hashPassword('correct horse');
  const h2 = await hashPassword('correct horse');
  t.not(h1, h2, 'salted');
  t.regex(h1, /^scrypt\$16384\$8\$1\$[\w-]+\$[\w-]+$/);
  t.false(h1.includes('correct'));
  t.true(await verifyPassword('correct horse', h1));
  t.false(await verifyPassword('correct horsE', h1));
  t.false(await verifyPassword('', h1));
  t.false(await verifyPassword('correct horse', undefined));
  t.false(await verifyPassword('correct horse', 'plain-text'));
  t.true(secretEquals('abc', 'abc'));
  t.false(secretEquals('abc', 'abcd'));
});

test('health sampler: alarms after `sustain` samples over, once per excursion, re-armed below the margin', async (t) => {
  let reading: HealthReading = { cpuFraction: 0.1, memoryFraction: 0.2, disks: [{ path: '/data', usedFraction: 0.5, availableBytes: 1e9 }] };
  const raised: AlarmInput[] = [];
  const s = new HealthSampler(
    () => Promise.resolve(reading),
    { cpuFraction: 0.9, memoryFraction: 0.8, diskFraction: 0.95, sustain: 2 },
    (a) => raised.push(a),
  );
  await s.sample();
  t.is(raised.length, 0);
  reading = { ...reading, cpuFraction: 0.95 };
  await s.sample();
  t.is(raised.length, 0, 'one sample over is a spike');
  await s.sample();
  t.deepEqual(
    raised.map((a) => a.kind),
    ['cpu-high'],
  );
  await s.sample();
  t.is(raised.length, 1, 'still over: no repeat');
  reading = { ...reading, cpuFraction: 0.88 };
  await s.sample();
  reading = { ...reading, cpuFraction: 0.95 };
  await s.sample();
  await s.sample();
  t.is(raised.length, 1, 'dipping just under the threshold does not re-arm');
  reading = { ...reading, cpuFraction: 0.5 };
  await s.sample();
  reading = { ...reading, cpuFraction: 0.99, memoryFraction: 0.85, disks: [{ path: '/data', usedFraction: 0.97, availableBytes: 1e6 }] };
  await s.sample();
  await s.sample();
  t.deepEqual(
    raised.map((a) => a.kind),
    ['cpu-high', 'cpu-high', 'memory-high', 'disk-near-full'],
  );
  t.like(raised[3]!.details, { path: '/data', availableBytes: 1e6, threshold: 0.95 });
  const failing = new HealthSampler(
    async () => Promise.reject(new Error('statfs failed')),
    { cpuFraction: 0.1, memoryFraction: 0.1, diskFraction: 0.1, sustain: 1 },
    (a) => raised.push(a),
  );
  await failing.sample();
  t.is(raised.length, 4, 'a failed reading raises nothing and does not throw');
});

test('progress bar: drawn only on a terminal, fixed width, cleared at the end', (t) => {
  t.is(renderBar('reindex', 0, 10), `reindex [${'-'.repeat(30)}]   0% 0/10`);
  t.is(renderBar('reindex', 5, 10), `reindex [${'#'.repeat(15)}${'-'.repeat(15)}]  50% 5/10`);
  t.is(renderBar('check', 0, 0), `check [${'#'.repeat(30)}] 100% 0/0`);
  const pipe: string[] = [];
  const onPipe = new ProgressBar('x', { isTTY: false, write: (s) => pipe.push(s) });
  onPipe.update(1, 2);
  onPipe.done();
  t.deepEqual(pipe, []);
  const tty: string[] = [];
  let now = 0;
  const onTty = new ProgressBar('x', { isTTY: true, write: (s) => tty.push(s) }, () => now);
  onTty.update(1, 100);
  onTty.update(2, 100); // within the redraw interval: skipped
  now = 1000;
  onTty.update(100, 100);
  onTty.done();
  t.is(tty.length, 3);
  t.true(tty[1]!.includes('100% 100/100'));
  t.is(tty[2], '\r\x1b[2K');
});

test('bitrate: bytes of the newest GOPs over their media time', (t) => {
  // Three 2 s GOPs of 50 000 bytes: 200 kbit/s.
  const gops = encodeGops([0, 1, 2].map((i) => ({ offset: 1000 + i * 50_000, size: 50_000, timeMs: i * 2000 })));
  t.is(bitrateOf({ gops, startMs: 10_000, endMs: 16_000 }), 200_000);
  t.is(bitrateOf({ gops: encodeGops([]), startMs: 0, endMs: 0 }), 0);
});
