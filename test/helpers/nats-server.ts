/**
 * A nats-server of a test's own, started on a free port and waited for until *it*
 * reports ready. An open port is not proof: a port found free can be taken by another
 * test before nats-server binds it, and a client would then talk to that listener and
 * time out. A taken port is retried on another, unless the test asked for one port
 * (a restart on the same address).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { freePort } from '../../lib/nats-embedded.ts';

export interface TestNatsServer {
  port: number;
  /** `nats://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>` */
  hostPort: string;
  child: ChildProcess;
}

const ATTEMPTS = 3;
/** Generous: it bounds a failure only, on a machine shared by many tests. */
const READY_TIMEOUT_MS = 30_000;

/**
 * `args(port)` gives nats-server's arguments for a port. The server is killed at the
 * test's teardown (teardowns run last-in first-out: register clients' closes after this).
 */
export async function startNatsServer(
  t: ExecutionContext,
  args: (port: number) => string[] | Promise<string[]>,
  opts: { port?: number; killed?: ChildProcess[] } = {},
): Promise<TestNatsServer> {
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const child = spawn('nats-server', await args(port), { stdio: ['ignore', 'ignore', 'pipe'] });
    if (opts.killed) opts.killed.push(child);
    else
      t.teardown(() => {
        child.kill('SIGKILL');
      });
    const outcome = await new Promise<string>((resolve) => {
      let text = '';
      // A server that neither says ready nor exits fails the test instead of hanging it.
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(`nats-server did not report ready within ${READY_TIMEOUT_MS / 1000} s: ${text.slice(-500)}`);
      }, READY_TIMEOUT_MS);
      const done = (why: string): void => {
        clearTimeout(timer);
        resolve(why);
      };
      child.stderr.setEncoding('utf8');
      // Read to the end (a server whose stderr pipe fills blocks on its next log line); keep only the start-up.
      child.stderr.on('data', (chunk: string) => {
        if (text.length > 64_000) return;
        text += chunk;
        if (text.includes('Server is ready')) done('ready');
      });
      // 'close', not 'exit': by then stderr has been read to its end, its last words included.
      child.once('close', (code, signal) =>
        done(/address already in use/i.test(text) ? 'taken' : `nats-server exited (${code ?? signal}): ${text.slice(-500)}`),
      );
      child.once('error', (err) => done(`nats-server did not start: ${err.message}`));
    });
    if (outcome === 'ready') return { port, url: `nats://127.0.0.1:${port}`, hostPort: `127.0.0.1:${port}`, child };
    if (outcome !== 'taken' || opts.port !== undefined || attempt >= ATTEMPTS) throw new Error(outcome === 'taken' ? `port ${port} is taken` : outcome);
  }
}
