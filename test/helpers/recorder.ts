/**
 * Test harness: a real recorder node (in this process, or as a child process for
 * crash tests) on a temp data dir with an embedded nats-server, real HTTP and a NATS
 * client. Everything is torn down by t.teardown, also when the test fails.
 */
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { Writable } from 'node:stream';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ConnectionOptions, type NatsConnection } from 'nats';
import { configSchema, type RecorderConfigInput } from '../../lib/config.ts';
import { readEmbeddedNatsCredentials, type NatsUserName } from '../../lib/nats-credentials.ts';
import { createLogger } from '../../lib/log.ts';
import { RecorderNode } from '../../node.ts';
import type { Clock } from '../../lib/time.ts';

export async function tempDir(t: ExecutionContext, prefix = 'rec-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestNode {
  node: RecorderNode;
  nc: NatsConnection;
  http: string;
  dataDir: string;
  request<T = Record<string, unknown>>(subject: string, body: unknown): Promise<T & { ok: boolean; error?: { code: string; message: string } }>;
}

/**
 * `opts.logLines`: every line the node logs is also pushed there (a test that checks
 * what the log never says, e.g. a camera's password).
 */
export async function startNode(
  t: ExecutionContext,
  overrides: RecorderConfigInput = {},
  dataDir?: string,
  opts: { clock?: Clock; logLines?: string[] } = {},
): Promise<TestNode> {
  const dir = dataDir ?? (await tempDir(t));
  const config = configSchema.parse({
    dataDir: dir,
    http: '127.0.0.1:0',
    segmentSeconds: 6,
    logLevel: process.env.TEST_LOG ?? 'info',
    minFreeBytes: 0,
    minFreeRatio: 0,
    indexReserveBytes: 0,
    // TEST_INGEST=native runs any suite with our own RTSP client reading the cameras it can.
    ...(process.env.TEST_INGEST ? { ingest: process.env.TEST_INGEST } : {}),
    ...overrides,
  });
  // The node's log goes to stderr when TEST_LOG asks for it; otherwise its last lines are
  // kept and logged only when the test fails (a camera in backoff says why).
  const logTail = process.env.TEST_LOG ? null : lineTail(60);
  const out = logTail?.stream ?? process.stderr;
  const all = opts.logLines;
  const logStream = all
    ? new Writable({
        write(chunk: Buffer, _enc, done) {
          all.push(...chunk.toString('utf8').split('\n').filter(Boolean));
          out.write(chunk, () => done());
        },
      })
    : out;
  const node = await RecorderNode.start({
    config,
    log: createLogger(config.logLevel, logStream),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  if (logTail) t.teardown(() => reportTailOnFailure(t, 'recorder log (in-process node), last lines', logTail.lines));
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await node.stop();
  });
  await node.natsReady();
  // The VMS's user of the embedded server (an external server in these tests has no auth).
  const nc = await connect({ servers: node.natsUrl!, ...(node.embeddedNats ? embeddedNatsUser(dir) : {}) });
  t.teardown(() => nc.close());
  const origStop = node.stop.bind(node);
  node.stop = async () => {
    stopped = true;
    await origStop();
  };
  return {
    node,
    nc,
    http: node.httpUrl,
    dataDir: dir,
    async request<T>(subject: string, body: unknown) {
      const msg = await nc.request(subject, JSON.stringify(body), { timeout: 10_000 });
      return JSON.parse(msg.string()) as T & { ok: boolean; error?: { code: string; message: string } };
    },
  };
}

/** A writable that keeps the last `max` lines written to it. */
function lineTail(max: number): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (lines.length > max) lines.splice(0, lines.length - max);
      done();
    },
  });
  return { stream, lines };
}

function reportTailOnFailure(t: ExecutionContext, heading: string, lines: string[]): void {
  // A before hook's teardown runs after the hook's context has closed: t.log is gone
  // and t.passed says nothing, so only a test's own node is reported.
  if (t.passed || typeof t.log !== 'function') return;
  t.log(`${heading}:\n${lines.join('\n')}`);
}

/**
 * Connection options of one of the embedded nats-server's users of a data dir
 * (`<data>/nats/credentials.json`): `vms` calls the control API, `observer` listens.
 */
export function embeddedNatsUser(dataDir: string, name: NatsUserName = 'vms'): Pick<ConnectionOptions, 'user' | 'pass'> {
  const creds = readEmbeddedNatsCredentials(dataDir);
  if (!creds) throw new Error(`no NATS credentials in ${dataDir}`);
  return { user: creds.users[name].user, pass: creds.users[name].password };
}

/** Polls `probe` until it returns a truthy value (or throws after `timeoutMs`). */
/** Waits until `camera` has a span (searched over HTTP from `sinceMs`) longer than `ms`; returns it. */
export async function waitForSpan(http: string, camera: string, sinceMs: number, ms: number, timeoutMs = 90_000): Promise<{ from: string; to: string }> {
  return waitFor(
    `${ms / 1000} s of video of ${camera}`,
    async () => {
      const q = `camera=${encodeURIComponent(camera)}&from=${sinceMs}&to=${Date.now() + 60_000}`;
      const body = (await (await fetch(`${http}/api/recordings?${q}`)).json()) as { spans: { from: string; to: string }[] };
      return body.spans.find((s) => Date.parse(s.to) - Date.parse(s.from) > ms) ?? null;
    },
    timeoutMs,
    500,
  );
}

export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 30_000, everyMs = 250): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Waits, when a day boundary (local or UTC midnight) is less than `minutes` away, until
 * it has passed. A test that reads "today" (the web UI's day timeline) and records across
 * midnight would see its video split over two days: that is the product's rule, not what
 * the test is about. The wait is on the clock reaching midnight, so it is never longer
 * than `minutes`.
 */
export async function clearOfMidnight(t: ExecutionContext, minutes: number): Promise<void> {
  const now = new Date();
  const local = new Date(now);
  local.setHours(24, 0, 0, 0);
  const utc = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  const next = Math.min(local.getTime(), utc);
  if (next - now.getTime() > minutes * 60_000) return;
  t.log(`waiting ${Math.ceil((next - now.getTime()) / 1000)} s for midnight to pass`);
  await waitFor('midnight to pass', () => Date.now() > next + 1000, minutes * 60_000 + 10_000, 1000);
}

export async function getJson<T = Record<string, unknown>>(url: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T };
}

/** A recorder as a separate process (for kill -9 tests). */
export interface RecorderProcess {
  child: ChildProcess;
  http: Promise<string>;
  /** The S3 listener's URL once it logs it (never settles for a recorder without one). */
  s3: Promise<string>;
  exited: Promise<number | null>;
}

/**
 * `entry`: a compiled recorder (scripts/build.ts) to run instead of the sources through
 * tsx; `args`: its command line (e.g. `--demo`).
 */
export function spawnRecorder(t: ExecutionContext, env: Record<string, string>, opts: { entry?: string; args?: string[] } = {}): RecorderProcess {
  const program = opts.entry ? ['--enable-source-maps', opts.entry] : ['--import', 'tsx', join(import.meta.dirname, '../../recorder.ts')];
  const child = spawn(process.execPath, [...program, ...(opts.args ?? [])], {
    env: {
      ...process.env,
      RECORDER_LOG_LEVEL: 'info',
      RECORDER_MIN_FREE_BYTES: '0',
      RECORDER_MIN_FREE_RATIO: '0',
      RECORDER_INDEX_RESERVE_BYTES: '0',
      // TEST_INGEST, as for startNode: who reads the cameras, unless the test says.
      ...(process.env.TEST_INGEST ? { RECORDER_INGEST: process.env.TEST_INGEST } : {}),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // TEST_RECORDER_LOG_DIR keeps each spawned recorder's log (to chase a flaky crash test).
  const logDir = process.env.TEST_RECORDER_LOG_DIR;
  if (logDir) {
    const out = createWriteStream(join(logDir, `${t.title.replace(/[^\w.-]+/g, '_')}-${child.pid}.log`));
    child.stdout.pipe(out, { end: false });
    child.stderr.pipe(out, { end: false });
    child.once('close', () => out.end());
  }
  // The last lines the recorder wrote, logged when the test fails (a recorder that
  // exited or stopped answering says why).
  const tail: string[] = [];
  const keep = (s: string): void => {
    tail.push(...s.split('\n').filter(Boolean));
    // Enough to see a cluster test's partition and heal (a reconnect logs a line per server a second).
    if (tail.length > 150) tail.splice(0, tail.length - 150);
  };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', keep);
  t.teardown(() => {
    if (t.passed) return;
    const said = `recorder ${child.pid} (exit ${child.exitCode ?? child.signalCode ?? 'running'}), last lines:\n${tail.join('\n')}`;
    // A before hook's teardown runs after the hook's context has closed: t.log is gone
    // and t.passed says nothing, so only a test's own recorder is reported.
    if (typeof t.log === 'function') t.log(said);
  });
  let buf = '';
  let s3Found: (url: string) => void = () => undefined;
  const s3 = new Promise<string>((resolve) => (s3Found = resolve));
  const http = new Promise<string>((resolve, reject) => {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      keep(s);
      buf += s;
      for (const line of buf.split('\n')) {
        const found = line.includes('"http listening"') ? resolve : line.includes('"s3 listening"') ? s3Found : null;
        if (!found) continue;
        try {
          found((JSON.parse(line) as { url: string }).url);
        } catch {
          /* partial line */
        }
      }
      if (buf.length > 1e6) buf = buf.slice(-1e5);
    });
    child.once('exit', (code) => reject(new Error(`recorder exited with ${code}`)));
  });
  http.catch(() => undefined);
  return { child, http, s3, exited };
}
