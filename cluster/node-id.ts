/**
 * The node's id in the cluster: made once and kept in `<data>/cluster/node-id`, so a
 * node that restarts on its data dir is the same node (its heartbeats, its cameras).
 * Written to a temp file, fdatasynced and renamed, so a crash leaves the old id or the
 * new one, never half of one. KV keys and NATS tokens take it as is ([a-z0-9-]).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, readFileSync, renameSync, writeSync, fdatasyncSync, closeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

const ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function nodeIdFile(dataDir: string): string {
  return join(dataDir, 'cluster', 'node-id');
}

/** The id stored in the data dir, or a new one (host name and 6 random hex digits) stored there. */
export function loadOrCreateNodeId(dataDir: string): string {
  const file = nodeIdFile(dataDir);
  try {
    const id = readFileSync(file, 'utf8').trim();
    if (ID.test(id)) return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const host = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  const id = `${host || 'node'}-${randomBytes(3).toString('hex')}`;
  mkdirSync(join(dataDir, 'cluster'), { recursive: true });
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, `${id}\n`);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  return id;
}
