/**
 * The embedded nats-server child used when no RECORDER_NATS_URL is set: JetStream on,
 * store under <data>/nats, loopback only, free ports.
 *
 * Lifetime: nats-server runs under a tiny sh wrapper that kills it when its stdin
 * reaches EOF. Our end of that pipe closes when this process exits for any reason,
 * including SIGKILL, so the server never outlives the recorder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { RecorderError } from './errors.ts';
import type { Logger } from './log.ts';

export interface EmbeddedNats {
  url: string;
  stop(): Promise<void>;
}

// A background job's stdin is /dev/null in sh, so the watcher reads our pipe via fd 3.
const WRAPPER = 'exec 3<&0; "$0" "$@" </dev/null & p=$!; trap \'kill $p 2>/dev/null; wait $p; exit 0\' TERM INT; (cat <&3 >/dev/null; kill $p 2>/dev/null) & wait $p';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function startEmbeddedNats(opts: { dataDir: string; binary: string; log: Logger; port?: number }): Promise<EmbeddedNats> {
  const store = join(opts.dataDir, 'nats');
  mkdirSync(store, { recursive: true });
  const port = opts.port ?? (await freePort());
  const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store];
  const child: ChildProcess = spawn('sh', ['-c', WRAPPER, opts.binary, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
  const tail: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('nats-server did not report ready within 15 s')), 15_000);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      child.kill('SIGTERM');
      reject(new RecorderError('NATS_START_FAILED', `${err.message}: ${tail.join(' | ')}`, { cause: err }));
    };
    const onEarlyExit = (code: number | null): void => fail(new Error(`nats-server exited with ${code}`));
    child.once('error', fail);
    child.once('exit', onEarlyExit);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        tail.push(line.trim());
        if (tail.length > 10) tail.shift();
        if (line.includes('Server is ready')) {
          clearTimeout(timer);
          child.removeListener('exit', onEarlyExit);
          resolve();
        }
      }
    });
  });
  const url = `nats://127.0.0.1:${port}`;
  opts.log.info({ url, store }, 'embedded nats-server started');
  return {
    url,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin!.end();
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
