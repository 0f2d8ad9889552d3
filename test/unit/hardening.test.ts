/**
 * Issue 13, the pure parts: dates that do not exist, bind addresses judged as IPs,
 * backup dirs that would overwrite the system, frame widths rounded to a few sizes,
 * tokens kept out of logs, and the frame decoder's bound.
 */
import test from 'ava';
import { Writable } from 'node:stream';
import { poolPutSchema } from '../../services/schemas.ts';
import { FRAME_WIDTHS, frameWidth } from '../../api/frames.ts';
import { assertAuthForBind, configSchema, isLoopbackAddress, splitHostPort } from '../../lib/config.ts';
import { createLogger } from '../../lib/log.ts';
import { parseTimeMs } from '../../lib/time.ts';
import { FrameDecoder, FramesBusyError } from '../../ffmpeg/ffmpeg-frame.ts';

test('dates that do not exist are refused, not rolled into the next month', (t) => {
  for (const bad of [
    '2026-02-30T00:00Z',
    '2026-02-29T12:00:00Z',
    '2026-13-01T00:00Z',
    '2026-04-31T00:00Z',
    '2026-01-01T24:00Z',
    '2026-01-01T10:60Z',
    '2026-01-01T10:00:60Z',
  ]) {
    t.throws(() => parseTimeMs(bad), { code: 'BAD_TIME' } as never, bad);
  }
  t.is(parseTimeMs('2024-02-29T23:59:59.999Z'), Date.UTC(2024, 1, 29, 23, 59, 59, 999));
  t.is(parseTimeMs('2026-03-01T01:00+01:00'), Date.UTC(2026, 2, 1));
});

test('loopback is an IP of the loopback network, never a name that looks like one', (t) => {
  for (const ip of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) t.true(isLoopbackAddress(ip), ip);
  for (const not of ['127.evil.example', 'localhost', '0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', '1270.0.0.1']) t.false(isLoopbackAddress(not), not);
  const config = (http: string) => configSchema.parse({ http });
  t.notThrows(() => assertAuthForBind(config('127.0.0.1:8080')));
  t.notThrows(() => assertAuthForBind(config('[::1]:8080')));
  t.notThrows(() => assertAuthForBind(config('localhost:8080')), 'a name is judged once bound');
  t.throws(() => assertAuthForBind(config('localhost:8080'), '192.168.1.5'), { code: 'CONFIG_INVALID' } as never);
  t.notThrows(() => assertAuthForBind(config('localhost:8080'), '127.0.0.1'));
  t.throws(() => assertAuthForBind(config('127.evil.example:8080')), { code: 'CONFIG_INVALID' } as never);
  t.throws(() => assertAuthForBind(config('0.0.0.0:8080')), { code: 'CONFIG_INVALID' } as never);
  t.deepEqual(splitHostPort('[::1]:8080'), { host: '::1', port: 8080 });
  t.deepEqual(splitHostPort('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  t.throws(() => configSchema.parse({ http: '::1:8080' }), undefined, 'an IPv6 host needs brackets');
});

test('a backup dir is refused at / and in the system trees', (t) => {
  const base = { id: 'p', capacityBytes: 1000, overwrite: 'capacity' };
  for (const bad of ['/', '//', '/etc', '/usr/local/x', '/proc/self', '/dev/sda', '/boot/', '/mnt/../etc']) {
    t.false(poolPutSchema.safeParse({ ...base, backupDir: bad }).success, bad);
  }
  for (const good of ['/mnt/backup', '/backup', '/srv/recorder-copy', '/var/lib/recorder-backup'])
    t.true(poolPutSchema.safeParse({ ...base, backupDir: good }).success, good);
});

test('frame widths round up to a few sizes, so widths cannot multiply decodes', (t) => {
  const widths = new Set<number>();
  for (let w = 16; w <= 3840; w++) widths.add(frameWidth(w));
  t.deepEqual([...widths], [...FRAME_WIDTHS]);
  t.is(frameWidth(161), 320);
  t.is(frameWidth(320), 320);
});

test('tokens in URLs never reach a log line', (t) => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const log = createLogger('info', sink);
  log.error({ url: '/api/cameras/a/live?x=1&access_token=s3cr3t-token&y=2', other: 'GET /ui?token=abc123' }, 'request failed');
  const text = lines.join('');
  t.false(text.includes('s3cr3t-token'), text);
  t.false(text.includes('abc123'), text);
  t.regex(text, /access_token=\*\*\*&y=2/);
});

test('the frame decoder refuses past its queue instead of spawning without bound', async (t) => {
  const decoder = new FrameDecoder({ ffmpegPath: '/bin/false', concurrency: 1, maxQueued: 2 });
  const junk = Buffer.from('not an mp4');
  const runs = [0, 1, 2, 3, 4].map(() =>
    decoder.decode(junk, junk).then(
      () => 'ok',
      (err: unknown) => (err instanceof FramesBusyError ? 'busy' : 'failed'),
    ),
  );
  const results = await Promise.all(runs);
  t.deepEqual(results.filter((r) => r === 'busy').length, 2, results.join());
  t.deepEqual(results.filter((r) => r === 'failed').length, 3, 'one running and two queued are decoded (here: fail as typed errors)');
});
