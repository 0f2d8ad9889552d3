/**
 * lib/child-process.ts, the one module that starts children: stderr is read and kept
 * bounded, a child dies with its owner's AbortSignal and with this process, an owner
 * that already stopped starts nothing, an exit nobody asked for is a typed error, and
 * the descriptor headroom check (formerly ffmpeg/spawn-headroom.ts) refuses a spawn
 * typed instead of letting Node hand out a child without stdio.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ChildProcessError, liveChildCount, liveChildren, spawnChild } from '../../lib/child-process.ts';

const ROOT = join(import.meta.dirname, '..', '..');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, probe: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs a TypeScript snippet in a fresh node (tsx), under `ulimit -n` when given; resolves with its stdout and exit code. */
function runScript(code: string, fdLimit?: number): Promise<{ out: string; code: number | null }> {
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', code];
  const child = spawn('sh', ['-c', `${fdLimit ? `ulimit -n ${fdLimit} && ` : ''}exec "$@"`, 'sh', ...node], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  return new Promise((resolve) => child.once('close', (exitCode) => resolve({ out, code: exitCode })));
}

test('stderr is read to the end line by line, and only its last lines are kept', async (t) => {
  const lines: string[] = [];
  const child = spawnChild({
    command: 'sh',
    file: 'sh',
    args: ['-c', 'i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done'],
    stderrLines: 5,
    onStderrLine: (l) => lines.push(l),
  });
  const exit = await child.exited;
  t.is(exit.code, 0);
  t.is(exit.error, null);
  t.is(lines.length, 500);
  t.deepEqual([...child.stderrTail], ['line 495', 'line 496', 'line 497', 'line 498', 'line 499']);
});

test("a child is killed when its owner's signal aborts, and counted until it is gone", async (t) => {
  const owner = new AbortController();
  const before = liveChildCount('sleeper');
  const child = spawnChild({ command: 'sleeper', file: 'sleep', args: ['60'], signal: owner.signal });
  t.is(liveChildCount('sleeper'), before + 1);
  t.is(liveChildren().get('sleeper'), before + 1);
  owner.abort();
  const exit = await child.exited;
  t.true(exit.requested);
  t.is(exit.signal, 'SIGKILL');
  t.is(exit.error, null, 'an exit we asked for is no error');
  t.false(alive(child.pid!));
  t.is(liveChildCount('sleeper'), before);
});

test('an owner that already stopped starts nothing: the spawn throws its reason', (t) => {
  const owner = new AbortController();
  const reason = new Error('shutting down');
  owner.abort(reason);
  const before = liveChildCount('sleeper');
  t.is(
    t.throws(() => spawnChild({ command: 'sleeper', file: 'sleep', args: ['60'], signal: owner.signal })),
    reason,
  );
  t.is(liveChildCount('sleeper'), before);
});

test('an exit nobody asked for is CHILD_EXITED with its last stderr lines; a missing binary SPAWN_FAILED; a long run CHILD_TIMEOUT', async (t) => {
  const failed = await spawnChild({ command: 'sh', file: 'sh', args: ['-c', 'echo "camera said no" >&2; exit 3'] }).exited;
  t.false(failed.requested);
  t.is(failed.code, 3);
  t.true(failed.error instanceof ChildProcessError);
  t.is(failed.error?.code, 'CHILD_EXITED');
  t.is(failed.error?.message, 'sh exited with code 3: camera said no');

  const missing = await spawnChild({ command: 'nothing', file: '/nonexistent/binary', args: [] }).exited;
  t.is(missing.error?.code, 'SPAWN_FAILED');
  t.regex(missing.error!.message, /ENOENT/);

  const slow = await spawnChild({ command: 'sleeper', file: 'sleep', args: ['60'], timeoutMs: 200 }).exited;
  t.is(slow.error?.code, 'CHILD_TIMEOUT');
  t.is(slow.signal, 'SIGKILL');
});

test('stop() sends the stop signal and SIGKILL after the grace when the child ignores it', async (t) => {
  const child = spawnChild({
    command: 'stubborn',
    file: 'sh',
    args: ['-c', "trap '' TERM; echo ready; sleep 60 & wait"],
    stopSignal: 'SIGTERM',
    stopGraceMs: 300,
  });
  await new Promise<void>((r) => child.stdout!.once('data', () => r()));
  const started = Date.now();
  const exit = await child.stop();
  t.true(exit.requested);
  t.is(exit.signal, 'SIGKILL');
  t.true(Date.now() - started >= 250);
});

test('children die with this process when it exits', async (t) => {
  const { out, code } = await runScript(
    `import { spawnChild } from './lib/child-process.ts';
     const c = spawnChild({ command: 'sleeper', file: 'sleep', args: ['60'] });
     console.log(c.pid);
     setTimeout(() => process.exit(0), 100);`,
  );
  t.is(code, 0);
  const pid = Number(out.trim());
  t.true(pid > 0, out);
  t.teardown(() => {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  await until('the orphan to be gone', () => !alive(pid), 5000);
  t.pass();
});

test('out of descriptors, a spawn is refused typed (SPAWN_NO_DESCRIPTORS) and starts nothing', async (t) => {
  const { out, code } = await runScript(
    `import { spawnChild } from './lib/child-process.ts';
     try { spawnChild({ command: 'sleeper', file: 'sleep', args: ['60'] }); console.log('spawned'); }
     catch (err) { console.log(err.code, err.message); }`,
    80,
  );
  t.is(code, 0);
  t.regex(out, /^SPAWN_NO_DESCRIPTORS cannot start sleeper: \d+ of 80 file descriptors are open/);
});
