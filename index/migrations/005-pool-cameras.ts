/**
 * Schema 5: `poolcameras` [poolId, cameraId] → bytes of the camera's segments in the
 * pool, kept in the same commit as every segment put and remove (SegmentStore), so the
 * cameras that have video in a pool are one keyed read (`segments.poolCameras`): the
 * backup audit and the restore of lost files read only those cameras' segments instead
 * of every segment of the node once per pool. Counted here once from the segments; a
 * camera deleted without purge, or moved to another pool, keeps its entry while it has
 * segments there.
 */
import type { Migration } from './migration.ts';

export const poolCamerasMigration: Migration = {
  version: 5,
  name: 'poolcameras: bytes per pool and camera',
  up(t) {
    const bytes = new Map<string, { pool: string; camera: string; bytes: number }>();
    for (const { value } of t.segments.getRange({})) {
      const k = `${value.pool}\u0000${value.camera}`;
      const e = bytes.get(k) ?? { pool: value.pool, camera: value.camera, bytes: 0 };
      e.bytes += value.bytes;
      bytes.set(k, e);
    }
    for (const e of bytes.values()) void t.poolcameras.put([e.pool, e.camera], e.bytes);
  },
};
