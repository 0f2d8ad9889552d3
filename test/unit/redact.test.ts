/**
 * Camera credentials out of everything a non-admin sees and out of every log line
 * (security/redact.ts, lib/redact.ts): URL and free-text redaction, JSON-escaped
 * passwords in a log line, and the PUT round trip of a redacted URL.
 */
import test from 'ava';
import { Writable } from 'node:stream';
import { createLogger } from '../../lib/log.ts';
import { RecorderError, errorBody } from '../../lib/errors.ts';
import { REDACTED, redactCamera, redactText, redactUrl, restoreRedacted } from '../../security/redact.ts';

test('a URL keeps everything but its password', (t) => {
  t.is(redactUrl('rtsp://admin:s3cret@10.0.0.7:554/Streaming/101?transport=tcp'), 'rtsp://admin:***@10.0.0.7:554/Streaming/101?transport=tcp');
  t.is(redactUrl('rtsps://admin:p@ss:w0rd@cam.local/live'), 'rtsps://admin:***@cam.local/live', "a raw '@' and ':' in the password");
  t.is(redactUrl('rtsp://a%40b:p%2Fq@cam/x'), 'rtsp://a%40b:***@cam/x');
  t.is(redactUrl('rtsp://admin:@cam/x'), 'rtsp://admin:***@cam/x', 'an empty password is not told apart');
  t.is(redactUrl('rtsp://admin@cam/x'), 'rtsp://admin@cam/x', 'a user without a password');
  t.is(redactUrl('rtsp://cam:554/x'), 'rtsp://cam:554/x', 'a port is not a password');
  t.is(redactUrl('rtsp://cam/x?u=a:b@c'), 'rtsp://cam/x?u=a:b@c', 'only the authority is looked at');
  t.is(redactUrl('rtsp://u:pw@cam/{start}'), 'rtsp://u:***@cam/{start}', 'edge templates');
});

test('free text: every URL of a message, ffmpeg style, and JSON-escaped passwords', (t) => {
  t.is(
    redactText('rtsp://admin:s3cret@10.0.0.7/a: 401 Unauthorized (authorization failed); retry rtsp://u:x@h:8554/b in 2 s'),
    'rtsp://admin:***@10.0.0.7/a: 401 Unauthorized (authorization failed); retry rtsp://u:***@h:8554/b in 2 s',
  );
  t.is(redactText('no url here: a:b@c'), 'no url here: a:b@c');
  const line = JSON.stringify({ msg: 'ingest ended', error: 'rtsp://admin:qu"ote\\d@cam/x failed' });
  const red = redactText(line);
  t.false(red.includes('qu'), red);
  t.deepEqual(JSON.parse(red), { msg: 'ingest ended', error: 'rtsp://admin:***@cam/x failed' }, 'the line stays JSON');
  t.is(redactText('rtsp://admin:***@cam/x'), 'rtsp://admin:***@cam/x', 'idempotent');
});

test('log lines never hold a password, whatever field or error carries it', (t) => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  const log = createLogger('info', sink);
  const url = 'rtsp://admin:Top$ecret@10.1.2.3/Streaming/101';
  log.info({ url, camera: 'c1' }, `connecting to ${url}`);
  log.error({ err: new Error(`${url}: Server returned 401 Unauthorized`) }, 'ingest failed');
  log.warn({ nested: { error: `first ${url} then rtsp://u:"quoted"@h/` } }, 'x');
  t.is(lines.length, 3);
  for (const l of lines) {
    t.false(l.includes('Top$ecret'), l);
    t.false(l.includes('quoted'), l);
    t.notThrows(() => JSON.parse(l) as unknown);
  }
  t.true(lines[0]!.includes('rtsp://admin:***@10.1.2.3/Streaming/101'));
  t.true(lines[1]!.includes('rtsp://admin:***@10.1.2.3/Streaming/101: Server returned 401'), 'the error message and stack too');
});

test('error bodies (HTTP and NATS replies) carry no password', (t) => {
  const body = errorBody(new RecorderError('EDGE_REFUSED', 'replay of rtsp://a:b@cam/x refused'));
  t.deepEqual(body, { code: 'EDGE_REFUSED', message: 'replay of rtsp://a:***@cam/x refused' });
});

const stored = {
  id: 'cam1',
  pool: 'default',
  streams: { main: 'rtsp://admin:main-pass@10.0.0.7:554/Streaming/101', sub: 'rtsp://viewer:sub-pass@10.0.0.7:554/Streaming/102' },
  record: { stream: 'main' as const },
  edge: { replayUrl: 'rtsp://admin:main-pass@10.0.0.7/Streaming/tracks/101?starttime={start}&endtime={end}', mode: 'url' as const },
};

test('a camera as a non-admin sees it: every URL field redacted, nothing else changed', (t) => {
  const seen = redactCamera(stored);
  t.deepEqual(seen, {
    ...stored,
    streams: { main: 'rtsp://admin:***@10.0.0.7:554/Streaming/101', sub: 'rtsp://viewer:***@10.0.0.7:554/Streaming/102' },
    edge: { replayUrl: 'rtsp://admin:***@10.0.0.7/Streaming/tracks/101?starttime={start}&endtime={end}', mode: 'url' },
  });
  t.false(JSON.stringify(seen).includes('pass'));
  t.is(stored.streams.main, 'rtsp://admin:main-pass@10.0.0.7:554/Streaming/101', 'the stored config is not touched');
  t.deepEqual(redactCamera({ streams: { main: 'rtsp://cam/x' } }), { streams: { main: 'rtsp://cam/x' } }, 'no sub, no edge: none added');
});

test('a PUT of what a non-admin was shown keeps the stored passwords', (t) => {
  const back = restoreRedacted({ ...redactCamera(stored), name: 'renamed' }, stored);
  t.deepEqual(back, { ...stored, name: 'renamed' });
});

test('a redacted URL with another path keeps the password of the same user at the same host', (t) => {
  const put = { ...stored, streams: { main: 'rtsp://admin:***@10.0.0.7:554/Streaming/201' }, edge: undefined };
  t.is(restoreRedacted(put, stored).streams.main, 'rtsp://admin:main-pass@10.0.0.7:554/Streaming/201');
  // A new sub stream of the same login takes the main stream's password.
  const sub = restoreRedacted(
    { ...stored, streams: { main: stored.streams.main, sub: 'rtsp://admin:***@10.0.0.7:554/Streaming/202' } },
    { ...stored, streams: { main: stored.streams.main } },
  );
  t.is(sub.streams.sub, 'rtsp://admin:main-pass@10.0.0.7:554/Streaming/202');
  // Same field first: the sub stream's own login when it matches.
  t.is(
    restoreRedacted({ ...stored, streams: { ...stored.streams, sub: 'rtsp://viewer:***@10.0.0.7:554/Streaming/102' } }, stored).streams.sub,
    stored.streams.sub,
  );
  // Scheme and host compare without case, as URLs do.
  t.is(
    restoreRedacted({ ...stored, streams: { main: 'RTSP://admin:***@10.0.0.7:554/x' }, edge: undefined }, stored).streams.main,
    'RTSP://admin:main-pass@10.0.0.7:554/x',
  );
});

test('a redacted URL that matches no stored login is refused, never stored as ***', (t) => {
  const code = (fn: () => unknown): string | undefined => {
    try {
      fn();
      return undefined;
    } catch (err) {
      return (err as RecorderError).code;
    }
  };
  for (const main of [
    'rtsp://admin:***@10.0.0.8:554/Streaming/101', // another host: the password must not travel there
    'rtsp://admin:***@10.0.0.7:8554/Streaming/101', // another port
    'rtsp://root:***@10.0.0.7:554/Streaming/101', // another user
    'rtsps://admin:***@10.0.0.7:554/Streaming/101', // another scheme
  ]) {
    t.is(
      code(() => restoreRedacted({ ...stored, streams: { main }, edge: undefined }, stored)),
      'VALIDATION_FAILED',
      main,
    );
  }
  t.is(
    code(() => restoreRedacted({ ...stored, streams: { main: 'rtsp://admin:***@10.0.0.7/x' }, edge: undefined }, undefined)),
    'VALIDATION_FAILED',
    'a new camera',
  );
  let message = '';
  try {
    restoreRedacted({ ...stored, streams: { main: stored.streams.main }, edge: { replayUrl: 'rtsp://admin:***@other/x', mode: 'onvif' as const } }, stored);
  } catch (err) {
    message = (err as Error).message;
  }
  t.regex(message, /^edge\.replayUrl: the password is the redaction mark/);
  // A real password is taken as sent.
  const changed = restoreRedacted({ ...stored, streams: { main: 'rtsp://admin:new-pass@10.0.0.7:554/Streaming/101' }, edge: undefined }, stored);
  t.is(changed.streams.main, 'rtsp://admin:new-pass@10.0.0.7:554/Streaming/101');
  t.is(REDACTED, '***');
});
