/**
 * A NATS cluster on one machine for the cluster tests, the demo and the bench: N
 * nats-servers with JetStream on loopback, routed to each other (the configuration
 * docs/design/cluster.md names: one config file per server, every route listed). Each
 * server runs under a small sh wrapper that kills it when its stdin reaches EOF, so
 * the servers die with this process even after a SIGKILL; lib/child-process.ts owns
 * the wrappers (stop: SIGTERM, SIGKILL 5 s later).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnChild, type Child } from '../lib/child-process.ts';
import { freePort } from '../lib/nats-embedded.ts';

// A background job's stdin is /dev/null in sh: the watcher reads our pipe through fd 3.
const WRAPPER =
  'exec 3<&0; "$0" "$@" </dev/null & p=$!; trap \'kill $p 2>/dev/null; wait $p; exit 0\' TERM INT; (cat <&3 >/dev/null; kill $p 2>/dev/null) & wait $p';

export interface ClusterServer {
  name: string;
  port: number;
  url: string;
  /** The nats-server's own pid (not its wrapper's); null while it is down. */
  pid(): number | null;
  running(): boolean;
  /** Stops it (SIGTERM) and waits for its exit. */
  stop(): Promise<void>;
  /** Sends it a signal (SIGKILL: a crash). */
  kill(signal: NodeJS.Signals): void;
  /** Starts it again on the same port and store; resolves once it reports ready. */
  start(): Promise<void>;
}

export interface NatsCluster {
  servers: ClusterServer[];
  /** Every client URL, comma separated (RECORDER_NATS_URL). */
  urls: string;
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 20_000;

/**
 * `noAdvertise`: the servers do not tell clients each other's URLs, so a client reaches
 * only the URLs it was given (a test that cuts one client off through TCP forwarders
 * needs it: nats.js would otherwise reconnect to a discovered server directly).
 */
export async function startNatsCluster(opts: { dir: string; size?: number; binary?: string; name?: string; noAdvertise?: boolean }): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const binary = opts.binary ?? 'nats-server';
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    routePorts.push(await freePort());
  }
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(', ');
  const servers: ClusterServer[] = [];
  for (let i = 0; i < size; i++) {
    const name = `n${i + 1}`;
    const store = join(opts.dir, name);
    mkdirSync(store, { recursive: true });
    const conf = join(opts.dir, `${name}.conf`);
    writeFileSync(
      conf,
      [
        `server_name: ${name}`,
        `listen: 127.0.0.1:${clientPorts[i]}`,
        `jetstream { store_dir: "${store}" }`,
        // One server is a cluster of one without routes: a cluster block of itself never elects a JetStream meta leader.
        size > 1
          ? `cluster { name: ${opts.name ?? 'c1'}, listen: 127.0.0.1:${routePorts[i]}, routes: [${routes}]${opts.noAdvertise ? ', no_advertise: true' : ''} }`
          : '',
        '',
      ].join('\n'),
    );
    servers.push(server(name, clientPorts[i]!, binary, conf));
  }
  try {
    await Promise.all(servers.map((s) => s.start()));
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
  return {
    servers,
    urls: servers.map((s) => s.url).join(','),
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

function server(name: string, port: number, binary: string, conf: string): ClusterServer {
  let child: Child | null = null;
  let pid: number | null = null;
  return {
    name,
    port,
    url: `nats://127.0.0.1:${port}`,
    pid: () => pid,
    running: () => child?.running ?? false,
    async stop() {
      const c = child;
      child = null;
      pid = null;
      await c?.stop();
    },
    kill(signal) {
      if (pid !== null) process.kill(pid, signal);
    },
    async start() {
      if (child?.running) return;
      let ready!: () => void;
      const isReady = new Promise<void>((r) => (ready = r));
      pid = null;
      const c: Child = spawnChild({
        command: 'nats-server',
        file: 'sh',
        args: ['-c', WRAPPER, binary, '-c', conf],
        stdin: 'pipe',
        stdout: 'ignore',
        stopSignal: 'SIGTERM',
        stopGraceMs: 5000,
        stderrLines: 20,
        onStderrLine: (line) => {
          const m = /^\[(\d+)\]/.exec(line);
          // Only this child's: a stopped server's last lines must not name a dead pid.
          if (m && pid === null && child === c) pid = Number(m[1]);
          if (line.includes('Server is ready')) ready();
        },
      });
      child = c;
      void c.exited.then(() => {
        if (child === c) pid = null;
      });
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          isReady,
          c.exited.then((e) => {
            throw new Error(`nats-server ${name} exited with ${e.code ?? e.signal}: ${c.stderrTail.join(' | ')}`);
          }),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`nats-server ${name} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
