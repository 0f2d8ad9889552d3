/**
 * Search across a cluster (docs/design/cluster.md "Any node answers"): the spans every
 * node that held a camera found in its own index, merged into one timeline. A camera
 * that moved at 10:00 shows the spans of both nodes; spans that overlap or touch become
 * one, with their type runs, locks and labels together. A gap one node recorded is kept
 * only for the time no node has video. Pure.
 */
/** What merging reads of a span (the search reply's span: services/recorder-service.ts SearchView). */
interface Span {
  from: string;
  to: string;
  types: { from: string }[];
  locks: { id: string }[];
  labels: { id: string }[];
}

interface Gap {
  from: string;
  to: string;
}

const ms = (s: string): number => Date.parse(s);

function byId<T extends { id: string }>(items: T[]): T[] {
  return [...new Map(items.map((i) => [i.id, i])).values()];
}

export function mergeSearch<S extends Span, G extends Gap>(views: readonly { spans: S[]; gaps: G[] }[]): { spans: S[]; gaps: G[] } {
  const spans = views.flatMap((v) => v.spans).sort((a, b) => ms(a.from) - ms(b.from));
  const merged: S[] = [];
  for (const s of spans) {
    const last = merged[merged.length - 1];
    if (last && ms(s.from) <= ms(last.to)) {
      if (ms(s.to) > ms(last.to)) last.to = s.to;
      last.types = [...last.types, ...s.types].sort((a, b) => ms(a.from) - ms(b.from));
      last.locks = byId([...last.locks, ...s.locks]);
      last.labels = byId([...last.labels, ...s.labels]);
    } else {
      merged.push({ ...s, types: [...s.types], locks: [...s.locks], labels: [...s.labels] });
    }
  }
  // Each gap less what any node has: only the time no node recorded stays a gap.
  const seen = new Set<string>();
  const gaps: G[] = [];
  for (const g of views.flatMap((v) => v.gaps).sort((a, b) => ms(a.from) - ms(b.from))) {
    let pieces = [{ fromMs: ms(g.from), toMs: ms(g.to) }];
    for (const s of merged) {
      const sf = ms(s.from);
      const st = ms(s.to);
      pieces = pieces.flatMap((p) =>
        st <= p.fromMs || sf >= p.toMs
          ? [p]
          : [...(sf > p.fromMs ? [{ fromMs: p.fromMs, toMs: sf }] : []), ...(st < p.toMs ? [{ fromMs: st, toMs: p.toMs }] : [])],
      );
    }
    for (const p of pieces) {
      const key = `${p.fromMs} ${p.toMs}`;
      if (seen.has(key)) continue;
      seen.add(key);
      gaps.push({ ...g, from: new Date(p.fromMs).toISOString(), to: new Date(p.toMs).toISOString() });
    }
  }
  return { spans: merged, gaps };
}
