#!/usr/bin/env -S node --import tsx
/**
 * Command line: `recorder [start]` runs a node; `recorder check` verifies the index
 * against the segment files; `recorder reindex` rebuilds the index from the files.
 * SIGTERM/SIGINT close every open segment and exit 0.
 */
import { helpText, loadConfig } from './lib/config.ts';
import { RecorderError } from './lib/errors.ts';
import { createLogger } from './lib/log.ts';
import { RecorderIndex } from './index/db.ts';
import { reconcile } from './storage/reconcile.ts';
import { RecorderNode } from './node.ts';
import { startDemoCamera } from './sim/demo.ts';

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
    const index = await RecorderIndex.open(config.dataDir);
    try {
      const report = await reconcile(index, config.dataDir, { mode: command === 'check' ? 'check' : 'rebuild', log });
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      const clean = report.truncated.length + report.reindexed.length + report.droppedEntries.length + report.unreadable.length + report.removedEmpty.length === 0;
      return command === 'check' && !clean ? 1 : 0;
    } finally {
      await index.close();
    }
  }

  const node = await RecorderNode.start({ config, log });
  const stopDemo = config.demo ? await startDemoCamera(node, log) : null;
  log.info({ http: node.httpUrl, nats: node.natsUrl }, 'recorder running');
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      log.info({ signal }, 'stopping');
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  await node.stop();
  await stopDemo?.();
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
