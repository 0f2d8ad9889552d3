#!/usr/bin/env -S node --import tsx
/**
 * Command line: `recorder [start]` runs a node; `recorder check` verifies the index
 * against the segment files; `recorder reindex` rebuilds the index from the files
 * (both draw a progress bar on a terminal); `recorder user add|list|remove` manages
 * HTTP users (security/users.ts), e.g. the first admin.
 * SIGTERM/SIGINT close every open segment and exit 0.
 *
 * Exit status: 0 done, 1 failed (the message says why), 2 bad command line, 3 the index
 * is corrupt (INDEX_CORRUPT) or not the one the config journal describes (INDEX_LOST):
 * `recorder reindex` rebuilds it (issue 13 item 5).
 */
import { helpText, loadConfig } from './lib/config.ts';
import { RecorderError } from './lib/errors.ts';
import { createLogger } from './lib/log.ts';
import { RecorderIndex } from './index/db.ts';
import { lockDataDir } from './lib/data-dir-lock.ts';
import { EXIT_INDEX, assertIndexIntact, dataDirInUse, moveIndexAside, openCheckedIndex } from './index/startup.ts';
import { checkIndexFile, describeCheck } from './index/integrity.ts';
import { JournalWriter, journalPath, readJournal, restoreFromJournal } from './index/journal.ts';
import type { Logger } from './lib/log.ts';
import type { RecorderConfig } from './lib/config.ts';
import { reconcile } from './storage/reconcile.ts';
import { picturesClean, reconcilePictures } from './pictures/reconcile.ts';
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

  if (command === 'reindex') return reindex(config, log);

  if (command === 'check') {
    // A corrupt file is reported (exit 3), never opened; the journal is compared, not enforced.
    const { index } = await openCheckedIndex(config.dataDir, log, { journal: false, metaOnly: await dataDirInUse(config.dataDir) });
    try {
      const bar = new ProgressBar(command);
      const report = await reconcile(index, config.dataDir, { mode: 'check', log, onProgress: (done, total) => bar.update(done, total) });
      bar.done();
      const pictures = await reconcilePictures(index, config.dataDir, { mode: 'check', log });
      process.stdout.write(
        `${JSON.stringify({ index: describeCheck(checkIndexFile(config.dataDir, { metaOnly: await dataDirInUse(config.dataDir) })), ...report, pictures }, null, 2)}\n`,
      );
      const clean =
        report.truncated.length + report.reindexed.length + report.droppedEntries.length + report.unreadable.length + report.removedEmpty.length === 0 &&
        picturesClean(pictures);
      return clean ? 0 : 1;
    } finally {
      await index.close();
    }
  }

  if (command === 'user') {
    // Never onto a corrupt index, nor a lost one (a first user there would hide the loss).
    const { index } = await openCheckedIndex(config.dataDir, log, { metaOnly: await dataDirInUse(config.dataDir) });
    const journal = new JournalWriter(index, config.dataDir, log);
    try {
      return await userCommand(new UserStore(index.users, systemClock), parsed.user!);
    } finally {
      await journal.flush().catch((err: unknown) => log.error({ err }, 'config journal not written'));
      await journal.stop();
      await index.close();
    }
  }

  // Signals are handled from here on, also while the node is still starting: a SIGTERM
  // then stops it cleanly (what started is stopped in reverse, lib/lifecycle.ts) instead
  // of killing it mid-write by default.
  const shutdown = new AbortController();
  const onSignal = (signal: string): void => {
    log.info({ signal }, 'stopping');
    shutdown.abort();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  let node: RecorderNode;
  try {
    node = await RecorderNode.start({ config, log, signal: shutdown.signal });
  } catch (err) {
    // Stopped by a signal while it started: everything started was stopped; that is a clean exit.
    if (shutdown.signal.aborted && err instanceof RecorderError && err.code === 'SHUTTING_DOWN') return 0;
    throw err;
  }
  const stopDemo = config.demo ? await startDemoCamera(node, log) : null;
  log.info({ http: node.httpUrl, nats: node.natsUrl }, 'recorder running');
  await new Promise<void>((resolve) => {
    if (shutdown.signal.aborted) resolve();
    else shutdown.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  await node.stop();
  await stopDemo?.();
  return 0;
}

/**
 * `recorder reindex`: under the data-dir lock, a corrupt index is set aside
 * (`index.corrupt-<time>`, never opened) and a new one made; kinds of records the index
 * has none of (a new index: all of them) are restored from the config journal; the
 * segment index is rebuilt from the files; the journal is written for the new index.
 */
async function reindex(config: RecorderConfig, log: Logger): Promise<number> {
  const dirLock = await lockDataDir(config.dataDir);
  try {
    const check = checkIndexFile(config.dataDir);
    let setAside: string | null = null;
    if (!check.ok) {
      setAside = await moveIndexAside(config.dataDir);
      log.warn({ problems: check.problems, setAside }, 'index corrupt: set aside, building a new one');
    }
    assertIndexIntact(config.dataDir);
    const journal = await readJournal(config.dataDir);
    const index = await RecorderIndex.open(config.dataDir);
    const writer = new JournalWriter(index, config.dataDir, log);
    try {
      await index.ensureId();
      const restored = journal ? await restoreFromJournal(index, journal) : {};
      if (!journal)
        log.warn({ journal: journalPath(config.dataDir) }, 'no config journal: cameras, schedules, users, pools, locks and labels are not restored');
      const bar = new ProgressBar('reindex');
      const report = await reconcile(index, config.dataDir, { mode: 'rebuild', log, onProgress: (done, total) => bar.update(done, total) });
      bar.done();
      // Packs describe themselves: a new index gets every pack's pictures back from its records.
      const pictures = await reconcilePictures(index, config.dataDir, { mode: 'repair', log });
      await writer.flush();
      process.stdout.write(
        `${JSON.stringify({ ...(setAside ? { corruptIndexSetAside: setAside, problems: check.problems } : {}), restoredFromJournal: restored, ...report, pictures }, null, 2)}\n`,
      );
      return 0;
    } finally {
      await writer.stop();
      await index.close();
    }
  } finally {
    await dirLock.release();
  }
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
    password = Buffer.concat(chunks)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  }
  const user = await users.put({ name: cmd.name, role: cmd.role, ...(cmd.pools ? { pools: cmd.pools } : {}), ...(password !== undefined ? { password } : {}) });
  const token = cmd.token ? (await users.issueToken(user.name)).token : undefined;
  process.stdout.write(`${JSON.stringify({ user: users.get(user.name), ...(token ? { token } : {}) }, null, 2)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err instanceof RecorderError ? `${err.code}: ${err.message}` : ((err as Error).stack ?? String(err));
    process.stderr.write(`recorder failed to start: ${e}\n`);
    process.exit(err instanceof RecorderError && (err.code === 'INDEX_CORRUPT' || err.code === 'INDEX_LOST') ? EXIT_INDEX : 1);
  },
);
