/**
 * Per camera and UTC day, the recorded time as exact record-type runs: what search
 * needs for long ranges without reading every segment (a month is ~31 reads instead of
 * ~43 000). Pure functions over a flat array [fromMs, toMs, type, fromMs, toMs, type…],
 * runs sorted and non-overlapping (a camera's segments never overlap).
 *
 * Maintained by RecorderIndex in the same commit as the segment it reflects:
 * a put adds the segment's runs (a union: putting a grown open segment again, or a
 * re-indexed one, is idempotent), a remove cuts the segment's range out. Only runs that
 * touch exactly and share a type are merged here; search joins across small holes.
 */
export type DaySummary = (number | string)[];

export const DAY_MS = 86_400_000;

export interface Run {
  fromMs: number;
  toMs: number;
  type: string;
}

export function dayStart(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** UTC days overlapped by [fromMs, toMs) (at least the day of fromMs). */
export function daysOf(fromMs: number, toMs: number): number[] {
  const out: number[] = [];
  for (let d = dayStart(fromMs); d < Math.max(toMs, fromMs + 1); d += DAY_MS) out.push(d);
  return out;
}

export function decodeSummary(s: DaySummary | undefined): Run[] {
  const out: Run[] = [];
  if (!s) return out;
  for (let i = 0; i + 2 < s.length; i += 3) out.push({ fromMs: s[i] as number, toMs: s[i + 1] as number, type: s[i + 2] as string });
  return out;
}

export function encodeSummary(runs: readonly Run[]): DaySummary {
  const out: DaySummary = [];
  for (const r of runs) out.push(r.fromMs, r.toMs, r.type);
  return out;
}

/** Union of `runs` into `summary`; an added run replaces whatever it overlaps (the newer record is right). */
export function addRuns(summary: readonly Run[], runs: readonly Run[]): Run[] {
  let out = [...summary];
  for (const add of runs) {
    if (add.toMs <= add.fromMs) continue;
    out = cutRuns(out, add.fromMs, add.toMs);
    let i = out.findIndex((r) => r.fromMs >= add.toMs);
    if (i === -1) i = out.length;
    out.splice(i, 0, { ...add });
    // Merge with exactly touching neighbours of the same type.
    const next = out[i + 1];
    if (next && next.fromMs === add.toMs && next.type === add.type) {
      out[i]!.toMs = next.toMs;
      out.splice(i + 1, 1);
    }
    const prev = out[i - 1];
    if (prev && prev.toMs === out[i]!.fromMs && prev.type === out[i]!.type) {
      prev.toMs = out[i]!.toMs;
      out.splice(i, 1);
    }
  }
  return out;
}

/** `summary` without [fromMs, toMs): runs inside go, runs across are trimmed or split. */
export function cutRuns(summary: readonly Run[], fromMs: number, toMs: number): Run[] {
  const out: Run[] = [];
  for (const r of summary) {
    if (r.toMs <= fromMs || r.fromMs >= toMs) {
      out.push({ ...r });
      continue;
    }
    if (r.fromMs < fromMs) out.push({ ...r, toMs: fromMs });
    if (r.toMs > toMs) out.push({ ...r, fromMs: toMs });
  }
  return out;
}

/** A segment's runs clipped to one day. */
export function runsInDay(runs: readonly Run[], day: number): Run[] {
  const end = day + DAY_MS;
  return runs.map((r) => ({ fromMs: Math.max(r.fromMs, day), toMs: Math.min(r.toMs, end), type: r.type })).filter((r) => r.toMs > r.fromMs);
}
