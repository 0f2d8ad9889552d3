/**
 * File work recorded before it happens (`intents`, key [kind, camera, startMs]), so a
 * crash in the middle is finished on the next start (docs/design/crash-safety.md). A
 * `delete` intent is committed with the removal of its segment's entry
 * (SegmentStore.removeWithIntent), a `thin` intent ends with the thinned entry
 * (SegmentStore.putThinned), a `purge` intent with the removal of its camera's
 * config (CameraStore.removeWithPurgeIntent); all end here once the files are settled.
 */
import type { IntentKey, IntentRecord } from './records.ts';
import type { Tables } from './tables.ts';

export function intentKey(intent: IntentRecord): IntentKey {
  return [intent.kind, intent.camera, intent.kind === 'purge' ? 0 : intent.startMs];
}

export class IntentStore {
  constructor(private readonly t: Tables) {}

  /** Step 1 of a thinning (storage/thin.ts): `tmp` is about to be written for `file`. */
  async beginThin(seg: { camera: string; startMs: number; file: string }, tmp: string): Promise<IntentRecord> {
    const intent: IntentRecord = { kind: 'thin', camera: seg.camera, startMs: seg.startMs, file: seg.file, tmp };
    await this.t.commit(this.t.intents.put(intentKey(intent), intent));
    return intent;
  }

  /** The file work is done (or undone): the intent goes. */
  async finish(intent: IntentRecord): Promise<void> {
    await this.t.commit(this.t.intents.remove(intentKey(intent)));
  }

  /** Every pending intent (crash replay). */
  list(): IntentRecord[] {
    return [...this.t.intents.getRange({})].map((e) => e.value);
  }
}
