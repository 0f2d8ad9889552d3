/**
 * Where pictures live on disk and how a picture is named (docs/design/pictures.md):
 *
 *   <data>/pictures/<pool>/<packId>.pack      pack files of a pool (pictures/pack-format.ts)
 *
 * A picture's id is `<camera>.<atMs>.<seq>`: its index key, readable, and safe in a URL
 * path and a file name (camera ids have no dots: storage/layout.ts ID_PATTERN), so the
 * URL `/api/pictures/<id>` stays valid for as long as the picture is kept.
 */
import { join, sep } from 'node:path';
import { ID_PATTERN } from '../storage/layout.ts';
import type { PictureKey } from '../index/pictures.ts';

export function picturesDir(dataDir: string): string {
  return join(dataDir, 'pictures');
}

export function packRelPath(pool: string, id: number): string {
  return join('pictures', pool, `${id}.pack`);
}

/** Inverse of packRelPath; null for anything that is not a pack file. */
export function parsePackRelPath(rel: string): { pool: string; id: number } | null {
  const parts = rel.split(sep);
  if (parts.length !== 3 || parts[0] !== 'pictures') return null;
  const m = /^([1-9]\d{0,14})\.pack$/.exec(parts[2]!);
  if (!m || !ID_PATTERN.test(parts[1]!)) return null;
  return { pool: parts[1]!, id: Number(m[1]) };
}

export function pictureId(key: PictureKey): string {
  return `${key[0]}.${key[1]}.${key[2]}`;
}

/** The key of a picture id; null when it is not one. */
export function parsePictureId(id: string): PictureKey | null {
  const m = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.(\d{1,16})\.(\d{1,9})$/.exec(id);
  return m ? [m[1]!, Number(m[2]), Number(m[3])] : null;
}

export function pictureUrl(key: PictureKey): string {
  return `/api/pictures/${pictureId(key)}`;
}
