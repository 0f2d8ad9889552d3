/**
 * Buckets a node had before it joined a cluster (docs/design/buckets.md "In a cluster"):
 * when the node first applies the cluster's object log, its own buckets are given to the
 * cluster, so that every node lists and serves them, instead of staying in this node's
 * catalog alone (where a bucket of the same name made by the cluster would merge with
 * one of them on this node only).
 *
 * How: the names are kept (`meta` `s3log.joining`) until each is done, across restarts.
 * For each, a `createBucket` with the bucket's own record is published; if it is first in
 * the log's order for that name, every version (markers too), oldest first, is published
 * as a `putObject` naming this node as its writer: the other nodes add them to their
 * catalogs and the holders pull the files from here, as for any write. Here each change
 * finds its version already in the catalog and does nothing.
 *
 * If the log made a bucket of that name first (another node's, before or while this one
 * joined), the two cannot be one: this node's bucket stays its own and
 * `bucket-name-taken` is raised once, naming it. Its objects and the cluster's bucket's
 * are then listed together on this node only, until an operator copies this node's
 * objects out and deletes them here.
 *
 * Invariants: a version is published with its own file id, so publishing twice (a
 * restart in the middle, a publish retried) changes nothing the second time; versions
 * are replayed under the bucket's versioning as it is now.
 */
import type { BucketRecord, BucketStore, ObjectRecord } from '../index/buckets.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';

export interface JoiningWrites {
  createBucket(rec: BucketRecord): Promise<boolean>;
  putObject(bucket: string, key: string, rec: ObjectRecord): Promise<unknown>;
}

export interface JoiningBucketsDeps {
  nodeId: string;
  catalog: BucketStore;
  log: Logger;
  signal: AbortSignal;
  raiseAlarm?: (alarm: AlarmInput) => void;
}

const PAGE = 1000;

export class JoiningBuckets {
  /** Names still to give. */
  private readonly names = new Set<string>();
  /** … of which the log made this node's claim first: the bucket is the cluster's, its versions being published. */
  private readonly claimed = new Set<string>();
  private running: Promise<void> | null = null;

  constructor(private readonly d: JoiningBucketsDeps) {
    const kept = d.catalog.logJoining();
    if (kept !== null) {
      const state = JSON.parse(kept) as { names?: unknown; claimed?: unknown };
      for (const n of Array.isArray(state.names) ? state.names : []) if (typeof n === 'string') this.names.add(n);
      for (const n of Array.isArray(state.claimed) ? state.claimed : []) if (typeof n === 'string') this.claimed.add(n);
    }
  }

  /** At the first bind of a node that never applied a log: its buckets are the ones to give. */
  async joined(): Promise<void> {
    const own = this.d.catalog.listBuckets().map((b) => b.name);
    if (own.length === 0) return;
    for (const n of own) this.names.add(n);
    await this.keep();
    this.d.log.info({ buckets: own }, "s3: this node's buckets from before it joined the cluster are given to the cluster");
  }

  /** Whether a `createBucket` of this name decides this node's claim (it is being given and not yet claimed). */
  deciding(name: string): boolean {
    return this.names.has(name) && !this.claimed.has(name);
  }

  /**
   * A `createBucket` of a name this node is giving, applied here. Its own (this node's
   * claim, first in the log): the bucket is the cluster's now (true, as a creation).
   * Another node's, first: the name is taken; this node's bucket stays its own (false).
   */
  async claimApplied(name: string, mine: boolean): Promise<boolean> {
    if (mine) {
      this.claimed.add(name);
      await this.keep();
      return true;
    }
    await this.drop(name);
    this.d.log.error({ bucket: name }, 's3: the cluster has a bucket of the name this node had before it joined; the two stay apart');
    this.d.raiseAlarm?.({
      kind: 'bucket-name-taken',
      message: `bucket ${name}: this node had a bucket of that name before it joined the cluster, and the cluster made one first; this node lists both's objects together, the other nodes only the cluster's. Copy this node's objects out and delete them here.`,
      details: { bucket: name, node: this.d.nodeId },
    });
    return false;
  }

  /** Gives the buckets still to give (one pass at a time; a failure leaves the rest for the next bind). */
  give(writes: JoiningWrites): Promise<void> {
    if (this.names.size === 0) return Promise.resolve();
    this.running ??= this.giveAll(writes)
      .catch((err: unknown) => this.d.log.warn({ err: (err as Error).message }, "s3: giving this node's buckets to the cluster paused; again at the next bind"))
      .finally(() => (this.running = null));
    return this.running;
  }

  private async giveAll(writes: JoiningWrites): Promise<void> {
    for (const name of [...this.names]) {
      if (this.d.signal.aborted) return;
      const rec = this.d.catalog.bucket(name);
      // Claimed before (a restart, a publish retried): its versions are published again, which changes nothing for those already in.
      if (rec && (this.claimed.has(name) || (await writes.createBucket(rec))) && this.claimed.has(name)) {
        const versions = this.versionsOf(name);
        for (const v of versions) {
          if (this.d.signal.aborted) return;
          await writes.putObject(name, v.key, { ...v.record, node: v.record.node ?? this.d.nodeId });
        }
        this.d.log.info({ bucket: name, versions: versions.length }, "s3: a bucket from before this node joined is the cluster's now");
      }
      await this.drop(name);
    }
  }

  /** Every version of a bucket, oldest first (the order they were written in). */
  private versionsOf(bucket: string): { key: string; record: ObjectRecord }[] {
    const all: { key: string; record: ObjectRecord }[] = [];
    let after: { key: string; versionId?: string } | undefined;
    for (;;) {
      const page = this.d.catalog.listVersions(bucket, '', PAGE, after);
      for (const v of page.versions) all.push({ key: v.key, record: v.record });
      const last = page.versions[page.versions.length - 1];
      if (!page.truncated || !last) break;
      after = { key: last.key, versionId: last.record.versionId ?? 'null' };
    }
    return all.sort((a, b) => a.record.lastModifiedMs - b.record.lastModifiedMs || (a.record.fileId < b.record.fileId ? -1 : 1));
  }

  private async drop(name: string): Promise<void> {
    if (!this.names.delete(name)) return;
    this.claimed.delete(name);
    await this.keep();
  }

  private async keep(): Promise<void> {
    await this.d.catalog.setLogJoining(this.names.size > 0 ? JSON.stringify({ names: [...this.names], claimed: [...this.claimed] }) : null);
  }
}
