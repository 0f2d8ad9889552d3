/**
 * The one module that converts times. Stored times are UTC epoch milliseconds on the
 * recorder's wall clock (docs/design/architecture.md invariant 5); names carry units (`startMs`).
 * Clients send ISO-8601 strings or epoch milliseconds; replies use ISO-8601.
 */
import { BadTimeError } from './errors.ts';

/** Injected everywhere instead of calling Date.now() inside logic. */
export interface Clock {
  nowMs(): number;
}
export const systemClock: Clock = { nowMs: () => Date.now() };

// Earliest and latest times we accept: anything outside is a typo, not a recording.
const MIN_MS = Date.UTC(2000, 0, 1);
const MAX_MS = Date.UTC(2200, 0, 1);
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/;

/**
 * Whether the fields of an ISO string exist as written: Date.parse takes `2026-02-30`
 * for March 2 and `24:00` for the next day, silently answering for another instant.
 */
function calendarValid(value: string): boolean {
  const [y, mo, d, h, mi, sec] = [value.slice(0, 4), value.slice(5, 7), value.slice(8, 10), value.slice(11, 13), value.slice(14, 16), value.slice(17, 19)].map(
    Number,
  ) as [number, number, number, number, number, number];
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  const hasSeconds = value[16] === ':';
  return mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth && h <= 23 && mi <= 59 && (!hasSeconds || sec <= 59);
}

/** Parses an ISO-8601 UTC/offset string or epoch milliseconds (number or digits). */
export function parseTimeMs(value: unknown, field = 'time'): number {
  let ms: number;
  if (typeof value === 'number') {
    ms = value;
  } else if (typeof value === 'string' && /^\d{1,16}$/.test(value)) {
    ms = Number(value);
  } else if (typeof value === 'string' && ISO_RE.test(value)) {
    if (!calendarValid(value)) throw new BadTimeError(`${field}: ${JSON.stringify(value)} is not a date of the calendar`);
    ms = Date.parse(value);
  } else {
    throw new BadTimeError(`${field}: expected ISO-8601 with a zone or epoch milliseconds, got ${JSON.stringify(value)}`);
  }
  if (!Number.isFinite(ms) || !Number.isInteger(Math.round(ms)) || ms < MIN_MS || ms > MAX_MS) {
    throw new BadTimeError(`${field}: ${JSON.stringify(value)} is not a valid time between 2000 and 2200`);
  }
  return Math.round(ms);
}

/** Parses a [from, to) pair and insists it is not inverted or empty. */
export function parseRangeMs(from: unknown, to: unknown): { fromMs: number; toMs: number } {
  const fromMs = parseTimeMs(from, 'from');
  const toMs = parseTimeMs(to, 'to');
  if (toMs <= fromMs) throw new BadTimeError(`to (${iso(toMs)}) must be after from (${iso(fromMs)})`);
  return { fromMs, toMs };
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** `yyyy-mm-dd` of a UTC time, the day folder of the disk layout. */
export function utcDay(ms: number): string {
  return iso(ms).slice(0, 10);
}

/** Media ticks to milliseconds (floating; callers round where they store). */
export function ticksToMs(ticks: number | bigint, timescale: number): number {
  return (Number(ticks) * 1000) / timescale;
}
