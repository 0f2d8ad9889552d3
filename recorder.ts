#!/usr/bin/env -S node --import tsx
/**
 * Command line: `recorder [start]` runs a node; `recorder check` verifies the index
 * against the segment files; `recorder reindex` rebuilds the index from the files
 * (both draw a progress bar on a terminal); `recorder user add|list|remove` manages
 * HTTP users (security/users.ts), e.g. the first admin.
 * SIGTERM/SIGINT close every open segment and exit 0.
 */
import { helpText, loadConfig } from './lib/config.ts';
import { RecorderError } from './lib/errors.ts';
import { createLogger } from './lib/log.ts';
import { RecorderIndex } from './index/db.ts';
import { lockDataDir } from './lib/data-dir-lock.ts';
import { reconcile } from './storage/reconcile.ts';
import { RecorderNode } from './node.ts';
import { startDemoCamera } from './sim/demo.ts';
import { ProgressBar } from './lib/progress.ts';
import { UserStore } from './security/users.ts';
import { systemClock } from './lib/time.ts';
import type { UserCommand } from './lib/config.ts';

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = loadConfig(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${helpText()}\n`);
    return 2;
  }
  if (parsed.help) {
    process.stdout.write(`${helpText()}\n`);
    return 0;
  }
  const { config, command } = parsed;
  const log = createLogger(config.logLevel);

  if (command === 'check' || command === 'reindex') {
    // A rebuild under a running recorder would fight it over the same files and index.
    const dirLock = command === 'reindex' ? await lockDataDir(config.dataDir) : null;
    const index = await RecorderIndex.open(config.dataDir).catch(async (err: unknown) => {
      await dirLock?.release();
      throw err;
    });
    try {
      const bar = new ProgressBar(command);
      const report = await reconcile(index, config.dataDir, { mode: command === 'check' ? 'check' : 'rebuild', log, onProgress: (done, total) => bar.update(done, total) });
      bar.done();
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      const clean = report.truncated.length + report.reindexed.length + report.droppedEntries.length + report.unreadable.length + report.removedEmpty.length === 0;
      return command === 'check' && !clean ? 1 : 0;
    } finally {
      await index.close();
      await dirLock?.release();
    }
  }

  if (command === 'user') {
    const index = await RecorderIndex.open(config.dataDir);
    try {
      return await userCommand(new UserStore(index.root, systemClock), parsed.user!);
    } finally {
      await index.close();
    }
  }

  // Signals are handled from here on, also while the node is still starting: a SIGTERM
  // then stops it cleanly once started, instead of killing it mid-write by default.
  const signalled = new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      log.info({ signal }, 'stopping');
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  const node = await RecorderNode.start({ config, log });
  const stopDemo = config.demo ? await startDemoCamera(node, log) : null;
  log.info({ http: node.httpUrl, nats: node.natsUrl }, 'recorder running');
  await signalled;
  await node.stop();
  await stopDemo?.();
  return 0;
}

/** `recorder user …`: the password comes from stdin (never argv, which `ps` shows). */
async function userCommand(users: UserStore, cmd: UserCommand): Promise<number> {
  if (cmd.verb === 'list') {
    process.stdout.write(`${JSON.stringify(users.list(), null, 2)}\n`);
    return 0;
  }
  if (cmd.verb === 'remove') {
    process.stdout.write(`${JSON.stringify(await users.remove(cmd.name!))}\n`);
    return 0;
  }
  let password: string | undefined;
  if (cmd.passwordStdin) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  const user = await users.put({ name: cmd.name, role: cmd.role, ...(cmd.pools ? { pools: cmd.pools } : {}), ...(password !== undefined ? { password } : {}) });
  const token = cmd.token ? (await users.issueToken(user.name)).token : undefined;
  process.stdout.write(`${JSON.stringify({ user: users.get(user.name), ...(token ? { token } : {}) }, null, 2)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err instanceof RecorderError ? `${err.code}: ${err.message}` : (err as Error).stack ?? String(err);
    process.stderr.write(`recorder failed to start: ${e}\n`);
    process.exit(1);
  },
);
