/**
 * Recorder processes of a test cluster (docs/design/cluster.md): each a child given
 * every nats-server URL, its own data dir and HTTP on a free port, known by its name
 * in the test and its node id (`<data>/cluster/node-id`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { spawnRecorder, type RecorderProcess } from './recorder.ts';

export interface ClusterNodeProcess {
  name: string;
  dataDir: string;
  proc: RecorderProcess;
  http: string;
  id: string;
}

/** Starts one recorder per name under `dir`, in parallel; `env` adds settings (segment length…). */
export async function spawnClusterNodes(
  t: ExecutionContext,
  dir: string,
  natsUrls: string,
  names: readonly string[],
  env: Record<string, string> = {},
): Promise<ClusterNodeProcess[]> {
  return Promise.all(
    names.map(async (name) => {
      const dataDir = join(dir, name);
      const proc = spawnRecorder(t, {
        RECORDER_DATA_DIR: dataDir,
        RECORDER_HTTP: '127.0.0.1:0',
        RECORDER_NATS_URL: natsUrls,
        RECORDER_SYNC_SECONDS: '0',
        ...env,
      });
      const http = await proc.http;
      return { name, dataDir, proc, http, id: readFileSync(join(dataDir, 'cluster', 'node-id'), 'utf8').trim() };
    }),
  );
}

/** An HTTP request with a JSON body (or none); its status and JSON answer. */
export async function send<T = Record<string, unknown>>(method: string, url: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(url, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as T };
}
