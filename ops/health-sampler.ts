/**
 * Samples machine CPU, memory and the data disk, and raises an alarm when one stays
 * over its threshold (`cpu-high`, `memory-high`, `disk-near-full`). One alarm per
 * excursion: a condition must stay over for `sustain` consecutive samples to alarm, and
 * re-arms only once it has dropped below threshold minus REARM_MARGIN (no flapping).
 * The reader and the clock are injected; tests drive `sample()` with readings.
 */
import os from 'node:os';
import type { AlarmInput } from '../lib/alarms.ts';
import { diskInfo } from './system.ts';

export interface HealthReading {
  /** Busy share of all cores since the previous reading, 0..1. */
  cpuFraction: number;
  memoryFraction: number;
  disks: { path: string; usedFraction: number; availableBytes: number }[];
}

export interface HealthThresholds {
  cpuFraction: number;
  memoryFraction: number;
  diskFraction: number;
  /** Consecutive samples over a threshold before the alarm (CPU spikes are normal). */
  sustain: number;
}

export const REARM_MARGIN = 0.05;

type Condition = 'cpu-high' | 'memory-high' | 'disk-near-full';

export class HealthSampler {
  private readonly over = new Map<string, number>();
  private readonly alarmed = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly read: () => Promise<HealthReading>,
    private readonly thresholds: HealthThresholds,
    private readonly raise: (alarm: AlarmInput) => void,
  ) {}

  /** Takes one reading and raises what it calls for. Never throws. */
  async sample(): Promise<void> {
    let r: HealthReading;
    try {
      r = await this.read();
    } catch {
      return; // a failed statfs is not a health condition; the next sample retries
    }
    const t = this.thresholds;
    this.check('cpu-high', 'cpu', r.cpuFraction, t.cpuFraction, `CPU busy ${pct(r.cpuFraction)} (threshold ${pct(t.cpuFraction)})`, {});
    this.check('memory-high', 'memory', r.memoryFraction, t.memoryFraction, `memory used ${pct(r.memoryFraction)} (threshold ${pct(t.memoryFraction)})`, {});
    for (const d of r.disks) {
      this.check(
        'disk-near-full',
        `disk:${d.path}`,
        d.usedFraction,
        t.diskFraction,
        `disk ${d.path} is ${pct(d.usedFraction)} full (threshold ${pct(t.diskFraction)}), ${d.availableBytes} bytes left`,
        {
          path: d.path,
          availableBytes: d.availableBytes,
        },
      );
    }
  }

  /**
   * The conditions that hold now (alarmed and not yet re-armed), e.g. `cpu-high`, or
   * null: what a cluster node says in its heartbeat (it then takes no camera and gives its
   * own up, cluster/placement.ts).
   */
  pressure(): string | null {
    const kinds = new Set([...this.alarmed].map((key) => (key === 'cpu' ? 'cpu-high' : key === 'memory' ? 'memory-high' : 'disk-near-full')));
    return kinds.size > 0 ? [...kinds].sort().join(', ') : null;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.running ??= this.sample().finally(() => (this.running = null));
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  private check(kind: Condition, key: string, value: number, threshold: number, message: string, details: Record<string, unknown>): void {
    if (value >= threshold) {
      const n = (this.over.get(key) ?? 0) + 1;
      this.over.set(key, n);
      if (n >= this.thresholds.sustain && !this.alarmed.has(key)) {
        this.alarmed.add(key);
        this.raise({ kind, message, details: { ...details, value, threshold } });
      }
    } else {
      this.over.set(key, 0);
      if (value < threshold - REARM_MARGIN) this.alarmed.delete(key);
    }
  }
}

function pct(f: number): string {
  return `${Math.round(f * 1000) / 10}%`;
}

/** Reads the machine (all cores, as os.cpus() counts them), its memory and the data disk. */
export function machineReader(dataDir: string): () => Promise<HealthReading> {
  let prev = cpuTimes();
  return async () => {
    const now = cpuTimes();
    const total = now.total - prev.total;
    const busy = total > 0 ? (total - (now.idle - prev.idle)) / total : 0;
    prev = now;
    const d = await diskInfo(dataDir);
    return {
      cpuFraction: busy,
      memoryFraction: 1 - os.freemem() / os.totalmem(),
      disks: [{ path: d.path, usedFraction: d.usedFraction, availableBytes: d.availableBytes }],
    };
  };
}

function cpuTimes(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const c of os.cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq;
  }
  return { idle, total };
}
