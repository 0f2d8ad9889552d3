/**
 * The smart (analytics) stream is retained and overwritten with the video it belongs
 * to: when retention deletes a segment, the smart files lying wholly in the video-less
 * hole it leaves go too. The hole runs from the end of the camera's previous surviving
 * segment to the start of its next one, so smart data next to surviving video (a locked
 * range, the live edge) is never taken.
 */
import type { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { deleteSmartRange, type SmartDeleteReport } from './smart-retention.ts';

export function deleteSmartWithVideo(index: RecorderIndex, dataDir: string, seg: SegmentRecord): Promise<SmartDeleteReport> {
  const fromMs = index.segments.atOrBefore(seg.camera, seg.startMs - 1)?.endMs ?? -1;
  const toMs = index.segments.after(seg.camera, seg.startMs)?.startMs ?? seg.endMs;
  return deleteSmartRange(index, dataDir, seg.camera, fromMs, toMs);
}
