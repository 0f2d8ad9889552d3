/**
 * Copy announcements are checked field by field where they are consumed
 * (cluster/announcement-stream.ts with the schemas of cluster/picture-copies.ts and
 * cluster/copies.ts). Before, a picture copy announcement whose `source`, `pool` or
 * `closed` was of the wrong type passed the check, failed later in its pull, and was
 * nak'ed and redelivered for ever, logging each time; now it is terminated at once and
 * logged in one line, and never reaches the service.
 */
import test from 'ava';
import { Writable } from 'node:stream';
import type { JsMsg } from 'nats';
import { AnnouncementStream } from '../../cluster/announcement-stream.ts';
import { copyAnnouncementSchema, type CopyAnnouncement } from '../../cluster/copies.ts';
import { pictureCopyAnnouncementSchema, type PictureCopyAnnouncement } from '../../cluster/picture-copies.ts';
import { createLogger } from '../../lib/log.ts';

const GOOD: PictureCopyAnnouncement = { origin: 'nvr1', pack: 7, pool: 'p', to: 4096, closed: false, source: 'nvr1', holders: ['nvr1', 'nvr2'] };

/** A delivered message as far as the stream reads it: its data, and what was done with it. */
function delivery(data: unknown): { m: JsMsg; done: string[] } {
  const done: string[] = [];
  const m = {
    subject: 'rec.piccopies.p.abc',
    seq: 42,
    info: { redeliveryCount: 1 },
    json: () => (typeof data === 'string' ? JSON.parse(data) : data) as unknown,
    term: (reason?: string) => done.push(`term: ${reason ?? ''}`),
    ack: () => done.push('ack'),
    nak: () => done.push('nak'),
    working: () => undefined,
  };
  return { m: m as unknown as JsMsg, done };
}

/** A picture copy stream whose log lines are kept (never started: only `accept` is tried). */
function pictureStream(): { stream: AnnouncementStream<PictureCopyAnnouncement>; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const stream = new AnnouncementStream<PictureCopyAnnouncement>({
    what: 'picture copies',
    stream: 'rec-piccopies',
    subjects: 'rec.piccopies.>',
    durable: 'piccopy-nvr2',
    replicas: 1,
    maxUnpublished: 10,
    subject: () => 'rec.piccopies.p.abc',
    id: (a) => `${a.origin}/${a.pack}/${a.source}`,
    describe: (a) => ({ origin: a.origin, pack: a.pack }),
    schema: pictureCopyAnnouncementSchema,
    malformed: 'not a picture copy announcement',
    batch: { max: 1, expiresMs: 10 },
    roundFailureLevel: 'debug',
    beforeFetch: () => Promise.resolve(),
    handle: () => Promise.resolve(),
    behindAlarm: () => ({ kind: 'copies-behind', message: '' }),
    log: createLogger('info', sink),
    signal: new AbortController().signal,
  });
  return { stream, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

test('a picture copy announcement with a wrong source, pool or closed is terminated and logged once, not redelivered', (t) => {
  const bad: [string, unknown][] = [
    ['source a number', { ...GOOD, source: 3 }],
    ['source missing', { ...GOOD, source: undefined }],
    ['pool an object', { ...GOOD, pool: { id: 'p' } }],
    ['pool missing', { ...GOOD, pool: undefined }],
    ['closed a string', { ...GOOD, closed: 'yes' }],
    ['closed missing', { ...GOOD, closed: undefined }],
    ['holders of numbers', { ...GOOD, holders: [1, 2] }],
    ['pack not whole', { ...GOOD, pack: 1.5 }],
    ['to negative', { ...GOOD, to: -1 }],
    ['origin empty', { ...GOOD, origin: '' }],
    ['backup without its grant', { ...GOOD, holders: [], backup: { http: 'http://a:1' } }],
    ['not JSON', '{"origin":'],
    ['not an object', [GOOD]],
  ];
  for (const [why, data] of bad) {
    const { stream, lines } = pictureStream();
    const { m, done } = delivery(data);
    t.is(stream.accept(m), null, why);
    t.deepEqual(done, ['term: not a picture copy announcement'], `${why}: terminated, so never redelivered`);
    const logged = lines();
    t.is(logged.length, 1, `${why}: one log line`);
    t.is(logged[0]!.level, 40, `${why}: a warning`);
    t.is(logged[0]!.seq, 42);
    t.regex(String(logged[0]!.msg), /^picture copies: not a picture copy announcement; terminated$/);
  }
  // The field named in the line: an operator sees what was wrong.
  const { stream, lines } = pictureStream();
  stream.accept(delivery({ ...GOOD, closed: 'yes' }).m);
  t.regex(String(lines()[0]!.err), /closed/);
});

test('a well-formed picture copy announcement is accepted as it came, with or without a backup', (t) => {
  const backup: PictureCopyAnnouncement = { ...GOOD, holders: [], backup: { http: 'http://a:1', grant: 'g' } };
  for (const a of [GOOD, { ...GOOD, closed: true, to: 0, pack: 0 }, backup]) {
    const { stream, lines } = pictureStream();
    const { m, done } = delivery(JSON.stringify(a));
    t.deepEqual(stream.accept(m), a);
    t.deepEqual(done, [], 'neither terminated nor acknowledged here: the service decides');
    t.is(lines().length, 0);
  }
});

test('a segment copy announcement is checked field by field too', (t) => {
  const good: CopyAnnouncement = { camera: 'k', startMs: 1_700_000_000_000, bytes: 1000, pool: 'p', source: 'nvr1', holders: ['nvr1', 'nvr2'] };
  t.true(copyAnnouncementSchema.safeParse(good).success);
  t.true(copyAnnouncementSchema.safeParse({ ...good, holders: [], origin: { node: 'x', http: 'http://x:1', grant: 'g' } }).success);
  for (const bad of [
    { ...good, source: 1 },
    { ...good, pool: undefined },
    { ...good, holders: 'nvr2' },
    { ...good, startMs: '1700000000000' },
    { ...good, bytes: -1 },
    { ...good, origin: { node: 'x', http: 'http://x:1' } },
  ]) {
    t.false(copyAnnouncementSchema.safeParse(bad).success, JSON.stringify(bad));
  }
});
