/**
 * A closed segment record for tests that put records into a real index without files
 * (cluster copies, backups, the one-timeline rule): one GOP of 900 bytes by default,
 * its file path where the pool and camera say, everything else overridable.
 */
import { encodeGops } from '../../index/gop-table.ts';
import type { SegmentRecord } from '../../index/records.ts';

export function segmentRecord(r: Pick<SegmentRecord, 'camera' | 'startMs' | 'endMs' | 'pool'> & Partial<SegmentRecord>): SegmentRecord {
  return {
    file: `pools/${r.pool}/${r.camera}/${r.startMs}.mp4`,
    format: 'mp4',
    stream: 'main',
    bytes: 1000,
    initSize: 100,
    mimeType: 'video/mp4',
    codecKey: 'k',
    types: [{ type: 'timing', fromMs: r.startMs }],
    gops: encodeGops([{ offset: 100, size: 900, timeMs: 0 }]),
    open: false,
    flags: {},
    ...r,
  };
}
