/**
 * System information (issue 8 "Operations"): version, CPU, memory and the disk that
 * holds the data dir, as `GET /api/system` and `rec.v1.system.info` return it.
 * Reads only the OS (statfs, os.*): never waits on a camera, ffmpeg or NATS.
 */
import { statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import os from 'node:os';

export interface DiskInfo {
  path: string;
  totalBytes: number;
  freeBytes: number;
  /** Free to an unprivileged writer (what the recorder can still use). */
  availableBytes: number;
  usedFraction: number;
}

export interface SystemInfo {
  version: string;
  node: string;
  platform: string;
  hostname: string;
  pid: number;
  uptimeSeconds: number;
  cpu: { model: string; cores: number; loadAverage: number[] };
  memory: { totalBytes: number; availableBytes: number; processRssBytes: number; processHeapUsedBytes: number };
  disks: DiskInfo[];
}

export async function diskInfo(path: string): Promise<DiskInfo> {
  const s = await statfs(path);
  const total = s.blocks * s.bsize;
  const free = s.bfree * s.bsize;
  const available = s.bavail * s.bsize;
  // "Used" as df counts it: what is not available to us, over what we could ever have.
  const usable = total - free + available;
  return { path: resolve(path), totalBytes: total, freeBytes: free, availableBytes: available, usedFraction: usable > 0 ? (usable - available) / usable : 0 };
}

export async function systemInfo(version: string, dataDir: string): Promise<SystemInfo> {
  const cpus = os.cpus();
  const mem = process.memoryUsage();
  return {
    version,
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    hostname: os.hostname(),
    pid: process.pid,
    uptimeSeconds: Math.round(process.uptime()),
    cpu: { model: cpus[0]?.model ?? 'unknown', cores: cpus.length, loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100) },
    memory: { totalBytes: os.totalmem(), availableBytes: os.freemem(), processRssBytes: mem.rss, processHeapUsedBytes: mem.heapUsed },
    disks: [await diskInfo(dataDir)],
  };
}
