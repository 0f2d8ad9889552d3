/**
 * The embedded nats-server child used when no RECORDER_NATS_URL is set: JetStream on,
 * store under <data>/nats, loopback only, authenticated (lib/nats-credentials.ts), on the
 * port it had last time when that is free.
 *
 * Supervision: when the server exits without being asked to, it is started again on
 * the same port and store after 1 s, doubling to 30 s while restarts keep failing (back
 * to 1 s once a server has run 30 s). The recorder's client reconnects by itself
 * (api/nats.ts `connectNats`); alarms wait in lib/alarms.ts until delivered.
 *
 * Lifetime: spawned, watched and stopped (SIGTERM, SIGKILL 5 s later) through
 * lib/child-process.ts. nats-server runs under a tiny sh wrapper that kills it when its stdin
 * reaches EOF. Our end of that pipe closes when this process exits for any reason,
 * including SIGKILL, so the server never outlives the recorder. When a server (or its
 * wrapper) dies, our end of its pipe is closed at once, so the wrapper's watcher exits
 * too and, had only the wrapper died, takes its server with it before the restart.
 */
import { createServer } from 'node:net';
import { spawnChild, type Child } from './child-process.ts';
import { RecorderError } from './errors.ts';
import type { Logger } from './log.ts';
import { credentialsFile, loadOrCreateCredentials, natsDir, saveEndpoint, writeServerConfig } from './nats-credentials.ts';

export interface EmbeddedNats {
  url: string;
  port: number;
  /** `<data>/nats/credentials.json`: the users' passwords (0600). */
  credentialsFile: string;
  /** The recorder's own user (lib/config.ts `natsUser`/`natsPassword` shape). */
  auth: { natsUser: string; natsPassword: string };
  /** The running nats-server's pid (not its wrapper's); null while it is down. */
  pid(): number | null;
  /** Restarts after an unexpected exit, since start. */
  restarts(): number;
  stop(): Promise<void>;
}

export interface EmbeddedNatsOptions {
  dataDir: string;
  binary: string;
  log: Logger;
  /** Default: the port of the last start if it is free, else any free port. */
  port?: number;
  /** First token of every subject (permissions are written for it). */
  subjectPrefix?: string;
  restartInitialMs?: number;
  restartMaxMs?: number;
}

// A background job's stdin is /dev/null in sh, so the watcher reads our pipe via fd 3.
const WRAPPER =
  'exec 3<&0; "$0" "$@" </dev/null & p=$!; trap \'kill $p 2>/dev/null; wait $p; exit 0\' TERM INT; (cat <&3 >/dev/null; kill $p 2>/dev/null) & wait $p';

const READY_TIMEOUT_MS = 15_000;
/** Starts tried when the chosen port is taken before nats-server binds it. */
const PORT_ATTEMPTS = 3;
/** nats-server's words for a port in use (`listen tcp 127.0.0.1:4222: bind: address already in use`). */
const PORT_TAKEN = /address already in use/i;
const INFO_LINE = /^\[\d+\] \S+ \S+ \[(INF|DBG|TRC)\]/;

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

function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

interface Running {
  child: Child;
  pid: number | null;
  readyAt: number;
  /** Warnings, errors and panics it wrote (not its start-up banner), last 10. */
  tail: string[];
}

/**
 * Starts one nats-server under the wrapper (through lib/child-process.ts, stopped with
 * SIGTERM and SIGKILL 5 s later, or when `signal` aborts) and resolves once it reports
 * ready.
 */
async function spawnServer(binary: string, args: string[], signal: AbortSignal): Promise<Running> {
  const running: Running = { child: null as unknown as Child, pid: null, readyAt: 0, tail: [] };
  let ready: (() => void) | null = null;
  const child = spawnChild({
    command: 'nats-server',
    file: 'sh',
    args: ['-c', WRAPPER, binary, ...args],
    // The wrapper's watcher reads our end of stdin: EOF (our exit, even by SIGKILL) ends the server.
    stdin: 'pipe',
    stdout: 'ignore',
    signal,
    stopSignal: 'SIGTERM',
    stopGraceMs: 5000,
    stderrLines: 10,
    // Read to the end (lib/child-process.ts does): a server whose stderr pipe fills up blocks on its next log line.
    onStderrLine: (raw) => {
      const line = raw.trim();
      if (!line) return;
      // What to show when it fails: warnings, errors, panics; not the start-up banner.
      if (!INFO_LINE.test(line)) {
        running.tail.push(line);
        if (running.tail.length > 10) running.tail.shift();
      }
      // Every line starts with the server's pid: `[1234] 2026/01/01 … [INF] …`.
      if (running.pid === null) {
        const m = /^\[(\d+)\]/.exec(line);
        if (m) running.pid = Number(m[1]);
      }
      if (running.readyAt === 0 && line.includes('Server is ready')) {
        running.readyAt = Date.now();
        ready?.();
      }
    },
  });
  running.child = child;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(`nats-server did not report ready within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS);
    let done = false;
    const fail = (why: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      void child.stop();
      reject(new RecorderError('NATS_START_FAILED', `${why}: ${running.tail.join(' | ')}`));
    };
    ready = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve();
    };
    // Its last words (e.g. the port is taken) are read before `exited` resolves.
    void child.exited.then((exit) => fail(exit.error?.code === 'SPAWN_FAILED' ? exit.error.message : `nats-server exited with ${exit.code ?? exit.signal}`));
  });
  return running;
}

export async function startEmbeddedNats(opts: EmbeddedNatsOptions): Promise<EmbeddedNats> {
  const { log } = opts;
  const store = natsDir(opts.dataDir);
  const prefix = opts.subjectPrefix ?? 'rec';
  const initialMs = opts.restartInitialMs ?? 1000;
  const maxMs = opts.restartMaxMs ?? 30_000;
  const creds = loadOrCreateCredentials(opts.dataDir, log);
  const conf = writeServerConfig(opts.dataDir, creds, prefix);
  let port = opts.port ?? (creds.port !== undefined && (await portFree(creds.port)) ? creds.port : await freePort());
  // -sd on the command line too: tests and operators find the server by its data dir.
  let args = ['-c', conf, '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store];
  // Aborted by stop(): every server of ours is stopped and none is started again.
  const stopped = new AbortController();
  let current: Running | null = null;
  // A port found free can be taken before nats-server binds it (another process, or
  // recorders started at once from copies of one data dir, which remember one port):
  // then another free port is tried. A port the operator set is never changed.
  for (let attempt = 1; ; attempt++) {
    try {
      current = await spawnServer(opts.binary, args, stopped.signal);
      break;
    } catch (err) {
      if (opts.port !== undefined || attempt >= PORT_ATTEMPTS || !PORT_TAKEN.test((err as Error).message)) throw err;
      const taken = port;
      port = await freePort();
      args = args.map((a, i) => (i > 0 && args[i - 1] === '-p' ? String(port) : a));
      log.warn({ port: taken, next: port }, 'the embedded nats-server port was taken as it started: trying another');
    }
  }
  const url = `nats://127.0.0.1:${port}`;
  saveEndpoint(opts.dataDir, creds, url, port, prefix);
  const file = credentialsFile(opts.dataDir);
  log.info(
    { url, store, pid: current.pid, credentials: file, users: ['recorder', 'vms', 'observer'] },
    'embedded nats-server started (authenticated; a VMS connects as user vms with the password in the credentials file)',
  );

  let restarts = 0;
  let delayMs = initialMs;
  let timer: NodeJS.Timeout | null = null;
  let attempt: Promise<void> | null = null;

  const schedule = (): void => {
    const wait = delayMs;
    delayMs = Math.min(delayMs * 2, maxMs);
    timer = setTimeout(() => {
      timer = null;
      attempt = restart().finally(() => {
        attempt = null;
      });
    }, wait);
  };

  const restart = async (): Promise<void> => {
    if (stopped.signal.aborted) return;
    let r: Running;
    try {
      r = await spawnServer(opts.binary, args, stopped.signal);
    } catch (err) {
      if (stopped.signal.aborted) return;
      log.error({ err, retryInMs: delayMs }, 'embedded nats-server restart failed');
      schedule();
      return;
    }
    restarts++;
    current = r;
    watch(r);
    log.warn({ url, pid: r.pid, restarts }, 'embedded nats-server restarted');
  };

  const watch = (r: Running): void => {
    void r.child.exited.then((exit) => {
      if (current === r) current = null;
      if (exit.requested) return;
      if (Date.now() - r.readyAt >= maxMs) delayMs = initialMs;
      log.error(
        { code: exit.code, signal: exit.signal, pid: r.pid, restartInMs: delayMs, tail: r.tail },
        'embedded nats-server exited unexpectedly: restarting it',
      );
      schedule();
    });
  };
  watch(current);

  return {
    url,
    port,
    credentialsFile: file,
    auth: { natsUser: creds.users.recorder.user, natsPassword: creds.users.recorder.password },
    pid: () => current?.pid ?? null,
    restarts: () => restarts,
    async stop() {
      stopped.abort();
      if (timer) clearTimeout(timer);
      timer = null;
      await attempt;
      await current?.child.exited;
    },
  };
}
