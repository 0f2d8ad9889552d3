/**
 * Trimming surplus copies (docs/design/cluster.md "Redundant copies", "Surplus copies"):
 * a node that holds a copy it did not write, and that is no longer one of the segment's
 * holders over the live nodes (cluster/copy-plan.ts `trimDecision`), deletes it, so the
 * pool converges to its `copies` holders after a node joins or comes back.
 *
 * Safety, in the order it is checked:
 * 1. Membership has been the same set for `settleMs` (`MembershipSettle`), at the start
 *    of a round and again before each batch deletes: nothing goes while a node flaps.
 * 2. Every holder confirms, at that moment, over `<prefix>.v1.node.<id>.copies.keep`,
 *    that it has the segment closed in its index (so its bytes are synced: invariant 2)
 *    and that it is a holder by its own view; a node that answers yes promises to keep
 *    the segment for PROMISE_MS (its own trimming skips it), so two nodes whose views
 *    differ never delete each other's copy. No answer is no.
 * 3. The deletion runs through the storage supervisor (`drop`): the lock barrier, then
 *    under the storage mutex the entry is read again (still closed, same file, not
 *    locked, still surplus) and deleted as retention deletes (storage/segment-delete.ts:
 *    intent, files, end of intent).
 *
 * Rounds run in the background after a node joined or came back (`schedule`), walk every
 * closed copy segment held here in batches, and log one count per round. Surplus copies
 * whose holders do not confirm yet (the newcomer still pulls them) are tried again with a
 * growing delay while rounds make progress.
 */
import type { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { sleepUnlessStopped } from '../lib/lifecycle.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { isLocked } from '../storage/retention-policy.ts';
import { MembershipSettle, segmentKey, trimDecision } from './copy-plan.ts';

/** The peer subject (after `<prefix>.v1.node.<id>.`) that confirms holders keep segments. */
export const KEEP_SUBJECT = 'copies.keep';
/** Segments per confirmation request and per deletion batch. */
export const TRIM_BATCH = 200;
/** How long a node that confirmed it keeps a segment does not trim it itself. */
const PROMISE_MS = 10 * 60_000;
const FIRST_RETRY_MS = 5000;
const MAX_RETRY_MS = 60_000;
/** Rounds in a row that trim nothing while copies still wait for their holders, before giving up until the next join. */
const IDLE_ROUNDS = 10;

/** A confirmation request: the segments the asker would delete. */
export interface KeepRequest {
  segments: { camera: string; startMs: number }[];
}

/** The answer, in the request's order: true: held closed here, and this node keeps it. */
export interface KeepReply {
  keep: boolean[];
}

export interface TrimDeps {
  nodeId: string;
  index: RecorderIndex;
  log: Logger;
  signal: AbortSignal;
  /** How long the live nodes must stay the same before copies are trimmed. */
  settleMs: number;
  liveNodes: () => string[];
  /** Closed segments held here of pools with `copies` > 1, with that number. */
  segments: () => Iterable<{ seg: SegmentRecord; copies: number }>;
  /** Whether a pull of this segment runs here now. */
  pulling: (camera: string, startMs: number) => boolean;
  /** Asks a peer on its own subject (cluster/cluster.ts `ask`). */
  ask: (node: string, what: string, body: KeepRequest) => Promise<KeepReply>;
  /**
   * Deletes the copies as retention deletes (actors/storage-supervisor.ts
   * `dropSurplusCopies`), each only if `stillSurplus(fresh entry)`; how many went.
   */
  drop: (segs: SegmentRecord[], stillSurplus: (fresh: SegmentRecord) => boolean) => Promise<number>;
  /** Monotonic ms (injected for tests). */
  nowMs?: () => number;
}

interface RoundResult {
  trimmed: number;
  /** Surplus copies left because a holder did not confirm yet. */
  waiting: number;
  /** The membership changed under the round: run again once it settles. */
  unsettled: boolean;
}

export class CopyTrimmer {
  private readonly settle: MembershipSettle;
  private readonly promised = new Map<string, number>();
  private running: Promise<void> | null = null;
  private again = false;
  private total = 0;

  constructor(private readonly d: TrimDeps) {
    this.settle = new MembershipSettle(d.settleMs);
  }

  private now(): number {
    return this.d.nowMs?.() ?? performance.now();
  }

  /** Surplus copies this node deleted since it started. */
  trimmed(): number {
    return this.total;
  }

  /**
   * Membership changed: settling starts over (a node that died and came back between two
   * samples looks like no change at all), and a running round stops at its next batch.
   */
  membershipChanged(): void {
    this.settle.reset();
  }

  /** Starts trimming rounds in the background (a node joined or came back); one runner at a time. */
  schedule(): void {
    this.settle.reset();
    this.again = true;
    if (this.running) return;
    this.running = this.run()
      .catch((err: unknown) => this.d.log.warn({ err: (err as Error).message }, 'copies: trimming surplus copies failed; again at the next join'))
      .finally(() => {
        this.running = null;
      });
  }

  /** Resolves when the current rounds end (tests). */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  /**
   * What this node answers a peer that would delete its own copies: for each segment,
   * whether it is here, closed, and this node keeps it (it wrote it, or is a holder by
   * its own view). A yes is a promise: this node does not trim that segment for PROMISE_MS.
   */
  answerKeep(body: unknown): KeepReply {
    const req = parseKeepRequest(body);
    // Pruned here too: a node that never trims itself still answers, and its promises must not pile up.
    this.forgetOldPromises();
    const live = this.d.liveNodes();
    const now = this.now();
    const keep = req.segments.map(({ camera, startMs }) => {
      const seg = this.d.index.segments.get(camera, startMs);
      if (!seg || seg.open) return false;
      const copies = this.d.index.pools.get(seg.pool)?.copies ?? 1;
      const key = segmentKey(camera, startMs);
      const decision = trimDecision({ key, writer: seg.fence?.node ?? null, self: this.d.nodeId, live, copies, locked: false, pulling: false });
      const keeps = 'keep' in decision;
      if (keeps) this.promised.set(key, now);
      return keeps;
    });
    return { keep };
  }

  private async run(): Promise<void> {
    let delay = FIRST_RETRY_MS;
    let idle = 0;
    while (!this.d.signal.aborted) {
      this.again = false;
      if (!(await this.waitSettled())) return;
      const r = await this.round();
      if (r.trimmed > 0 || r.waiting > 0) {
        this.d.log.info(
          { trimmed: r.trimmed, waiting: r.waiting },
          'copies: a round of trimming surplus copies (copies beyond the pool’s, held by a node that is no longer a holder)',
        );
      }
      if (r.unsettled || this.again) {
        delay = FIRST_RETRY_MS;
        idle = 0;
        continue;
      }
      if (r.waiting === 0) return;
      idle = r.trimmed > 0 ? 0 : idle + 1;
      if (idle >= IDLE_ROUNDS) {
        this.d.log.warn({ waiting: r.waiting }, 'copies: surplus copies kept: their holders have not confirmed them; tried again at the next join');
        return;
      }
      await this.sleep(delay);
      delay = Math.min(MAX_RETRY_MS, delay * 2);
    }
  }

  /** Waits until the live nodes have been the same for settleMs; false: stopped. */
  private async waitSettled(): Promise<boolean> {
    while (!this.d.signal.aborted) {
      if (this.settle.settled(this.d.liveNodes(), this.now())) return true;
      await this.sleep(Math.min(1000, Math.max(50, this.d.settleMs / 4)));
    }
    return false;
  }

  private async round(): Promise<RoundResult> {
    const result: RoundResult = { trimmed: 0, waiting: 0, unsettled: false };
    const view = [...this.d.liveNodes()].sort();
    const now = Date.now();
    let batch: { seg: SegmentRecord; holders: string[] }[] = [];
    for (const { seg, copies } of this.d.segments()) {
      if (this.d.signal.aborted) return result;
      const key = segmentKey(seg.camera, seg.startMs);
      const promisedAt = this.promised.get(key);
      if (promisedAt !== undefined && this.now() - promisedAt < PROMISE_MS) continue;
      const decision = trimDecision({
        key,
        writer: seg.fence?.node ?? null,
        self: this.d.nodeId,
        live: view,
        copies,
        locked: isLocked(this.d.index.locks.ofCamera(seg.camera), seg.startMs, seg.endMs, now),
        pulling: this.d.pulling(seg.camera, seg.startMs),
      });
      if ('keep' in decision) continue;
      batch.push({ seg, holders: decision.drop });
      if (batch.length >= TRIM_BATCH) {
        if (!(await this.trimBatch(batch, view, result))) return result;
        batch = [];
      }
    }
    if (batch.length > 0) await this.trimBatch(batch, view, result);
    this.forgetOldPromises();
    return result;
  }

  /** Confirms a batch with its holders and deletes what every holder keeps; false: membership changed, the round stops. */
  private async trimBatch(batch: { seg: SegmentRecord; holders: string[] }[], view: string[], result: RoundResult): Promise<boolean> {
    const confirmed = await this.confirm(batch);
    const ok = batch.filter((_, i) => confirmed[i]);
    result.waiting += batch.length - ok.length;
    if (ok.length === 0) return true;
    if (!this.sameView(view)) {
      result.unsettled = true;
      result.waiting += ok.length;
      return false;
    }
    const copiesOf = new Map(ok.map(({ seg }) => [segmentKey(seg.camera, seg.startMs), seg]));
    // Checked again under the storage mutex, on the entry as it is then.
    const stillSurplus = (fresh: SegmentRecord): boolean => {
      const was = copiesOf.get(segmentKey(fresh.camera, fresh.startMs));
      if (!was || fresh.file !== was.file || fresh.open || !this.sameView(view)) return false;
      if (this.d.pulling(fresh.camera, fresh.startMs)) return false;
      const copies = this.d.index.pools.get(fresh.pool)?.copies ?? 1;
      const promisedAt = this.promised.get(segmentKey(fresh.camera, fresh.startMs));
      if (promisedAt !== undefined && this.now() - promisedAt < PROMISE_MS) return false;
      return (
        copies > 1 &&
        'drop' in
          trimDecision({
            key: segmentKey(fresh.camera, fresh.startMs),
            writer: fresh.fence?.node ?? null,
            self: this.d.nodeId,
            live: view,
            copies,
            locked: false,
            pulling: false,
          })
      );
    };
    const dropped = await this.d.drop(
      ok.map((c) => c.seg),
      stillSurplus,
    );
    result.trimmed += dropped;
    this.total += dropped;
    result.waiting += ok.length - dropped;
    return true;
  }

  /** For each candidate: whether every one of its holders answered that it keeps it. */
  private async confirm(batch: { seg: SegmentRecord; holders: string[] }[]): Promise<boolean[]> {
    const yes = batch.map(() => true);
    const byNode = new Map<string, number[]>();
    batch.forEach((c, i) => {
      for (const h of c.holders) byNode.set(h, [...(byNode.get(h) ?? []), i]);
    });
    await Promise.all(
      [...byNode].map(async ([node, idx]) => {
        let keep: boolean[] = [];
        try {
          const reply = await this.d.ask(node, KEEP_SUBJECT, { segments: idx.map((i) => ({ camera: batch[i]!.seg.camera, startMs: batch[i]!.seg.startMs })) });
          keep = Array.isArray(reply.keep) ? reply.keep : [];
        } catch (err) {
          this.d.log.debug({ node, err: (err as Error).message }, 'copies: a holder did not confirm; its surplus copies are kept for now');
        }
        idx.forEach((i, j) => {
          if (keep[j] !== true) yes[i] = false;
        });
      }),
    );
    return yes;
  }

  private sameView(view: readonly string[]): boolean {
    const now = [...this.d.liveNodes()].sort();
    return now.length === view.length && now.every((n, i) => n === view[i]) && this.settle.settled(now, this.now());
  }

  private forgetOldPromises(): void {
    const now = this.now();
    for (const [key, at] of this.promised) if (now - at >= PROMISE_MS) this.promised.delete(key);
  }

  private sleep(ms: number): Promise<void> {
    return sleepUnlessStopped(ms, this.d.signal);
  }
}

/** A keep request as a peer sent it: at most TRIM_BATCH segments, each a camera and a start. */
export function parseKeepRequest(body: unknown): KeepRequest {
  const segments = (body as { segments?: unknown } | null)?.segments;
  if (!Array.isArray(segments) || segments.length > TRIM_BATCH) {
    throw new RecorderError('VALIDATION_FAILED', `a keep request carries up to ${TRIM_BATCH} segments`);
  }
  return {
    segments: segments.map((s: unknown) => {
      const { camera, startMs } = (s ?? {}) as { camera?: unknown; startMs?: unknown };
      if (typeof camera !== 'string' || typeof startMs !== 'number' || !Number.isSafeInteger(startMs)) {
        throw new RecorderError('VALIDATION_FAILED', 'a keep request names segments as {camera, startMs}');
      }
      return { camera, startMs };
    }),
  };
}
