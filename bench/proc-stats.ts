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

