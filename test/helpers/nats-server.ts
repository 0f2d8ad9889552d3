/**
 * A nats-server of a test's own, started on a free port and waited for until *it*
 * reports ready. An open port is not proof: a port found free can be taken by another
 * test before nats-server binds it, and a client would then talk to that listener and
 * time out. A taken port is retried on another, unless the test asked for one port
 * (a restart on the same address). The process is owned through lib/child-process.ts,
 * as every child of ours is: stderr read to its end, SIGKILL at this process's exit.
 */
import type { ExecutionContext } from 'ava';
import { spawnChild } from '../../lib/child-process.ts';
import { freePort } from '../../lib/nats-embedded.ts';

export interface TestNatsServer {
  port: number;
  /** `nats://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>` */
  hostPort: string;
  /** SIGKILL: the server crashes. */
  crash(): void;
  /** SIGTERM (SIGKILL 5 s later) and its exit. */
  stop(): Promise<void>;
}

const ATTEMPTS = 3;
/** Generous: it bounds a failure only, on a machine shared by many tests. */
const READY_TIMEOUT_MS = 30_000;

/**
 * `args(port)` gives nats-server's arguments for a port. The server is stopped at the
 * test's teardown (teardowns run last-in first-out: register clients' closes after
 * this), or, with `stoppedByCaller`, by a teardown the test registered earlier.
 */
export async function startNatsServer(
  t: ExecutionContext,
  args: (port: number) => string[] | Promise<string[]>,
  opts: { port?: number; stoppedByCaller?: boolean } = {},
): Promise<TestNatsServer> {
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    let ready!: () => void;
    const isReady = new Promise<'ready'>((r) => (ready = () => r('ready')));
    const child = spawnChild({
      command: 'nats-server',
      file: 'nats-server',
      args: await args(port),
      stdin: 'ignore',
      stdout: 'ignore',
      stopSignal: 'SIGTERM',
      stopGraceMs: 5000,
      stderrLines: 20,
      onStderrLine: (line) => {
        if (line.includes('Server is ready')) ready();
      },
    });
    const server: TestNatsServer = {
      port,
      url: `nats://127.0.0.1:${port}`,
      hostPort: `127.0.0.1:${port}`,
      crash: () => {
        if (child.running && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      },
      stop: async () => void (await child.stop()),
    };
    if (!opts.stoppedByCaller) t.teardown(() => server.stop());
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      isReady,
      // `exited` resolves after stderr was read to its end: its last words are in the tail.
      child.exited.then((exit) => {
        const said = child.stderrTail.join(' | ');
        return /address already in use/i.test(said) ? 'taken' : `nats-server exited (${exit.code ?? exit.signal}): ${said}`;
      }),
      new Promise<string>((r) => (timer = setTimeout(() => r(`nats-server did not report ready within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (outcome === 'ready') return server;
    await child.stop();
    if (outcome !== 'taken' || opts.port !== undefined || attempt >= ATTEMPTS) throw new Error(outcome === 'taken' ? `port ${port} is taken` : outcome);
  }
}
