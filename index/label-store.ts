/**
 * Labels (`labels`, key labelId) and their time index (`labelidx`, key
 * [camera, startMs, labelId] → null). A label and its index key are written and
 * removed in one commit, so the index never names a label that is not there.
 */
import type { LabelRecord } from './records.ts';
import type { Tables } from './tables.ts';

export class LabelStore {
  constructor(private readonly t: Tables) {}

  get(id: string): LabelRecord | undefined {
    return this.t.labels.get(id);
  }

  /** Stores a new label, or replaces `old` (same id; camera or start may have changed). */
  async put(label: LabelRecord, old?: LabelRecord): Promise<void> {
    await this.t.commit(
      this.t.root.transaction(() => {
        if (old) void this.t.labelidx.remove([old.camera, old.startMs, old.id]);
        void this.t.labelidx.put([label.camera, label.startMs, label.id], null);
        void this.t.labels.put(label.id, label);
      }),
    );
  }

  async remove(label: LabelRecord): Promise<void> {
    await this.t.commit(
      this.t.root.transaction(() => {
        void this.t.labelidx.remove([label.camera, label.startMs, label.id]);
        void this.t.labels.remove(label.id);
      }),
    );
  }

  /** Every label, by id. */
  all(): LabelRecord[] {
    return [...this.t.labels.getRange({})].map((e) => e.value);
  }

  /** Labels of `camera` that start before `toMs`, by start (the caller checks their ends). */
  ofCameraBefore(camera: string, toMs: number): LabelRecord[] {
    const out: LabelRecord[] = [];
    for (const key of this.t.labelidx.getKeys({ start: [camera, -Infinity, ''], end: [camera, toMs, ''] })) {
      const l = this.t.labels.get(key[2]);
      if (l) out.push(l);
    }
    return out;
  }
}
