import test from 'ava';
import { STREAM_ROUTES, StreamLimiter } from '../../api/stream-limit.ts';

test('the stream limiter hands out at most max slots, counts refusals, and a release counts once', (t) => {
  const limiter = new StreamLimiter(2);
  const a = limiter.tryAcquire();
  const b = limiter.tryAcquire();
  t.truthy(a);
  t.truthy(b);
  t.is(limiter.tryAcquire(), null);
  t.is(limiter.refused, 1);
  t.is(limiter.active, 2);
  a!();
  a!(); // a second 'close' of the same stream must not free another slot
  t.is(limiter.active, 1);
  const c = limiter.tryAcquire();
  t.truthy(c);
  t.is(limiter.tryAcquire(), null);
  t.is(limiter.refused, 2);
  b!();
  c!();
  t.is(limiter.active, 0);
});

test('only media routes are limited: search, cameras, health and metrics never are', (t) => {
  for (const r of [
    '/api/cameras/:id/video.mp4',
    '/api/cameras/:id/play',
    '/api/cameras/:id/playback',
    '/api/cameras/:id/live',
    '/api/cameras/:id/segments/:file',
  ])
    t.true(STREAM_ROUTES.has(r), r);
  for (const r of ['/api/recordings', '/api/cameras', '/api/health', '/metrics', '/api/cameras/:id/video.m3u8']) t.false(STREAM_ROUTES.has(r), r);
});
