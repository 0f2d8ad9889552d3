/**
 * What a weekly plan says about one instant. Pure: no I/O, no clock of its own.
 * Slots are in the plan's IANA time zone; `end <= start` means the slot runs past
 * midnight into the next day. Where timing and event slots overlap, event wins
 * (seed: event recording has priority over timing).
 */
import type { SchedulePlan, ScheduleSlot } from '../index/records.ts';

export type PlannedRecording = 'timing' | 'event' | null;

interface LocalTime {
  weekday: number; // 0 = Sunday
  minute: number; // minutes since local midnight
}

const formatters = new Map<string, Intl.DateTimeFormat>();

export function localTime(ms: number, timeZone: string): LocalTime {
  let fmt = formatters.get(timeZone);
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(timeZone, fmt);
  }
  let weekday = 0;
  let hour = 0;
  let minute = 0;
  for (const part of fmt.formatToParts(ms)) {
    if (part.type === 'weekday') weekday = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'].indexOf(part.value);
    else if (part.type === 'hour') hour = Number(part.value);
    else if (part.type === 'minute') minute = Number(part.value);
  }
  return { weekday, minute: hour * 60 + minute };
}

export function parseHHMM(s: string): number {
  const [h, m] = s.split(':').map(Number) as [number, number];
  return h * 60 + m;
}

function slotCovers(slot: ScheduleSlot, t: LocalTime): boolean {
  const start = parseHHMM(slot.start);
  const end = parseHHMM(slot.end);
  if (end > start) return slot.days.includes(t.weekday) && t.minute >= start && t.minute < end;
  // Overnight (or 24 h when end == start): the evening part on its day, the morning part on the next.
  const yesterday = (t.weekday + 6) % 7;
  return (slot.days.includes(t.weekday) && t.minute >= start) || (slot.days.includes(yesterday) && t.minute < end);
}

/** The stream the slot in force at `ms` asks for (event slots outrank timing), if any. */
export function plannedStream(plan: SchedulePlan | undefined, ms: number): 'main' | 'sub' | undefined {
  if (!plan) return undefined;
  const t = localTime(ms, plan.timeZone);
  let result: 'main' | 'sub' | undefined;
  for (const slot of plan.slots) {
    if (!slotCovers(slot, t)) continue;
    if (slot.type === 'event') return slot.stream;
    result ??= slot.stream;
  }
  return result;
}

/** The record type the plan asks for at `ms`; a camera without a plan records always. */
export function plannedAt(plan: SchedulePlan | undefined, ms: number): PlannedRecording {
  if (!plan) return 'timing';
  const t = localTime(ms, plan.timeZone);
  let result: PlannedRecording = null;
  for (const slot of plan.slots) {
    if (!slotCovers(slot, t)) continue;
    if (slot.type === 'event') return 'event';
    result = 'timing';
  }
  return result;
}

const MINUTE_MS = 60_000;
/** Plans repeat weekly; a week plus a DST hour bounds any search. */
const HORIZON_MS = 8 * 24 * 3600_000;

/**
 * When what the plan asks for next changes after `ms` (to the minute), or null if it
 * never does. Steps from slot boundary to slot boundary in local time, at most 30 min
 * at a time so a DST jump cannot skip a boundary unseen, then narrows to the minute.
 */
export function nextChangeMs(plan: SchedulePlan | undefined, ms: number): number | null {
  return nextChange(plan, ms, (at) => plannedAt(plan, at));
}

/**
 * When the record type or the stream the plan asks for next changes after `ms` (a
 * timing slot on `sub` followed by one on `main` is a change): the next moment a
 * camera actor must look at its plan again. Null if never.
 */
export function nextPlanChangeMs(plan: SchedulePlan | undefined, ms: number): number | null {
  return nextChange(plan, ms, (at) => `${plannedAt(plan, at)} ${plannedStream(plan, at)}`);
}

function nextChange(plan: SchedulePlan | undefined, ms: number, said: (ms: number) => string | null): number | null {
  if (!plan || plan.slots.length === 0) return null;
  const boundaries = [...new Set(plan.slots.flatMap((s) => [parseHHMM(s.start) % 1440, parseHHMM(s.end) % 1440]))];
  const current = said(ms);
  let t = Math.floor(ms / MINUTE_MS) * MINUTE_MS;
  const end = ms + HORIZON_MS;
  while (t < end) {
    const local = localTime(t, plan.timeZone).minute;
    const toNext = Math.min(...boundaries.map((b) => (b - local + 1440) % 1440 || 1440));
    const next = t + Math.min(toNext, 30) * MINUTE_MS;
    if (said(next) !== current) {
      // The change lies in (t, next]: find its first minute.
      let lo = t;
      let hi = next;
      while (hi - lo > MINUTE_MS) {
        const mid = lo + Math.floor((hi - lo) / 2 / MINUTE_MS) * MINUTE_MS;
        if (said(mid) !== current) hi = mid;
        else lo = mid;
      }
      return hi;
    }
    t = next;
  }
  return null;
}

const DAY_NAMES = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/**
 * Problems a plan must not have: a slot of zero length (start == end, except the
 * all-day 00:00-00:00), and two slots of the same type covering the same minute
 * (slots of different types may overlap: event outranks timing). Null when fine.
 */
export function slotProblem(slots: ScheduleSlot[]): string | null {
  const owner = { timing: new Int16Array(7 * 1440).fill(-1), event: new Int16Array(7 * 1440).fill(-1) };
  for (const [i, slot] of slots.entries()) {
    const start = parseHHMM(slot.start) % 1440;
    let end = parseHHMM(slot.end) % 1440;
    if (start === end && slot.start !== '00:00') return `slot ${i} is empty (start equals end ${slot.start})`;
    if (end <= start) end += 1440; // overnight, or all day for 00:00-00:00
    const mark = owner[slot.type];
    for (const day of new Set(slot.days)) {
      for (let m = start; m < end; m++) {
        const cell = (day * 1440 + m) % (7 * 1440);
        const other = mark[cell]!;
        if (other >= 0 && other !== i) {
          return `slots ${other} and ${i} (both ${slot.type}) overlap on ${DAY_NAMES[Math.floor(cell / 1440)]} at ${String(Math.floor((cell % 1440) / 60)).padStart(2, '0')}:${String(cell % 60).padStart(2, '0')}`;
        }
        mark[cell] = i;
      }
    }
  }
  return null;
}
