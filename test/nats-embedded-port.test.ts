/**
 * The embedded nats-server's remembered port (lib/nats-embedded.ts): recorders started at
 * once from copies of one data dir remember one port, all find it free, and all but one
 * lose it to the first to bind. Each must start anyway, on another free port (CI saw
 * index-corrupt's three recorders, copies of one golden data dir, fail this way: HTTP up,
 * then NATS_START_FAILED closed it).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'nats';
import { configSchema } from '../lib/config.ts';
import { silentLogger } from '../lib/log.ts';
import { startEmbeddedNats } from '../lib/nats-embedded.ts';
import { tempDir } from './helpers/recorder.ts';

interface Started {
  port?: number;
  url?: string;
  user?: string;
  pass?: string;
  error?: string;
}

test('copies of one data dir start their embedded nats-servers at once in three processes: each runs, on the remembered port or another', async (t) => {
  const first = await tempDir(t);
  // One start to remember a port, then stopped: the copies all remember it.
  const once = await startEmbeddedNats({ dataDir: first, binary: configSchema.parse({}).natsServerPath, log: silentLogger, subjectPrefix: 'rec' });
  const remembered = once.port;
  await once.stop();

  const children = await Promise.all(
    [1, 2, 3].map(async (i) => {
      const dir = join(await tempDir(t), `copy${i}`);
      await cp(first, dir, { recursive: true });
      const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'helpers/embedded-nats-child.ts'), dir], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      t.teardown(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      child.stdout.setEncoding('utf8');
      let buf = '';
      const lines: string[] = [];
      let wake: (() => void) | null = null;
      child.stdout.on('data', (s: string) => {
        buf += s;
        const parts = buf.split('\n');
        buf = parts.pop()!;
        lines.push(...parts);
        wake?.();
      });
      const nextLine = async (): Promise<string> => {
        while (lines.length === 0) {
          if (child.exitCode !== null) throw new Error(`child exited with ${child.exitCode}`);
          await new Promise<void>((r) => (wake = r));
        }
        return lines.shift()!;
      };
      return { child, nextLine };
    }),
  );
  // All loaded; then all start at the same instant, each from its own process.
  for (const c of children) t.is(await c.nextLine(), 'ready');
  for (const c of children) c.child.stdin.write('go\n');
  const started = await Promise.all(children.map(async (c) => JSON.parse(await c.nextLine()) as Started));
  t.teardown(async () => {
    for (const c of children) c.child.stdin.end();
    await Promise.all(children.map((c) => new Promise((r) => (c.child.exitCode !== null ? r(null) : c.child.once('exit', r)))));
  });

  t.deepEqual(
    started.map((s) => s.error),
    [undefined, undefined, undefined],
    'no start failed',
  );
  t.is(new Set(started.map((s) => s.port)).size, 3, 'three servers, three ports');
  t.true(
    started.some((s) => s.port === remembered),
    'one has the remembered port',
  );
  for (const s of started) {
    const nc = await connect({ servers: s.url!, user: s.user!, pass: s.pass! });
    await nc.flush();
    await nc.close();
  }
});
