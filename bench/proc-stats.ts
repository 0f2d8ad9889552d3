/**
 * CPU and memory of process trees from /proc (Linux): CPU as clock ticks
 * (utime+stime), memory as PSS from smaps_rollup, which splits shared pages fairly
 * between processes (RSS would count the shared ffmpeg libraries once per process).
 */
import { readFileSync, readdirSync } from 'node:fs';

const TICKS_PER_SEC = 100; // sysconf(_SC_CLK_TCK) on Linux x86_64

export function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime
  } catch {
    return 0;
  }
}

export function pssKb(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** pid and all its descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      /* process ended */
    }
  }
  const out: number[] = [];
  const walk = (pid: number): void => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  walk(root);
  return out;
}

export interface TreeSample {
  ticks: number;
  pssKb: number;
  processes: number;
}

export function sampleTrees(roots: number[]): TreeSample {
  let ticks = 0;
  let pss = 0;
  let processes = 0;
  for (const root of roots) {
    for (const pid of processTree(root)) {
      ticks += cpuTicks(pid);
      pss += pssKb(pid);
      processes++;
    }
  }
  return { ticks, pssKb: pss, processes };
}

export function ticksToCores(ticks: number, seconds: number): number {
  return ticks / TICKS_PER_SEC / seconds;
}

/** CPU ticks of one process split by thread kind (user and system time apart). */
export type ThreadTicks = Record<string, { user: number; sys: number }>;

/**
 * Threads of `pid` grouped by their name (`comm`): for node, `node` is the main thread
 * (JavaScript, stream and HTTP work), `libuv-worker` the thread pool (fs reads, writes,
 * fdatasync), `V8 Worker`/`V8 DefaultWorke` garbage collection and compilation.
 */
export function threadTicks(pid: number): ThreadTicks {
  const out: ThreadTicks = {};
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const kind = tid === String(pid) ? 'main' : comm;
      const e = (out[kind] ??= { user: 0, sys: 0 });
      e.user += Number(fields[11]);
      e.sys += Number(fields[12]);
    } catch {
      /* thread ended */
    }
  }
  return out;
}

/** Recorder tree split: node's threads by kind plus all ffmpeg children together. */
export function recorderBreakdown(root: number): ThreadTicks {
  const out = threadTicks(root);
  const ff = { user: 0, sys: 0 };
  for (const pid of processTree(root)) {
    if (pid === root) continue;
    for (const t of Object.values(threadTicks(pid))) {
      ff.user += t.user;
      ff.sys += t.sys;
    }
  }
  out['ffmpeg children'] = ff;
  return out;
}

/** b − a per kind, as cores. */
export function breakdownCores(a: ThreadTicks, b: ThreadTicks, seconds: number): Record<string, { user: number; sys: number }> {
  const out: Record<string, { user: number; sys: number }> = {};
  for (const [k, v] of Object.entries(b)) {
    const u = v.user - (a[k]?.user ?? 0);
    const s = v.sys - (a[k]?.sys ?? 0);
    if (u + s > 0) out[k] = { user: +ticksToCores(u, seconds).toFixed(3), sys: +ticksToCores(s, seconds).toFixed(3) };
  }
  return out;
}
