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
  let fromMs = -1;
  for (const { value } of index.segments.getRange({ start: [seg.camera, seg.startMs], end: [seg.camera, -1], reverse: true, limit: 2 })) {
    if (value.camera === seg.camera && value.startMs < seg.startMs) {
      fromMs = value.endMs;
      break;
    }
  }
  let toMs = seg.endMs;
  for (const { value } of index.segments.getRange({ start: [seg.camera, seg.startMs + 1], end: [seg.camera, Number.MAX_SAFE_INTEGER], limit: 1 })) toMs = value.startMs;
  return deleteSmartRange(index, dataDir, seg.camera, fromMs, toMs);
}
