/**
 * The schema migrations, in order, and the runner that brings an index up to
 * SCHEMA_VERSION when it is opened (index/db.ts). Meta `schema` holds the version the
 * index has; each migration runs in one transaction with the bump to its version, so
 * an interrupted upgrade resumes at the first migration that did not commit. A new
 * index starts at SCHEMA_VERSION; an index of a newer build is refused
 * (INDEX_SCHEMA_MISMATCH) and left untouched.
 *
 * Adding one: a file `NNN-what.ts` exporting a Migration with the next version, listed
 * below, a line in docs/design/index-layout.md, and a case in
 * test/unit/index-migrations.test.ts that opens an index of the previous version.
 */
import { RecorderError } from '../../lib/errors.ts';
import type { Tables } from '../tables.ts';
import type { Migration } from './migration.ts';
import { segmentTimesMigration } from './002-segment-times.ts';
import { poolUsageMigration } from './003-pool-usage.ts';
import { daySummariesMigration } from './004-day-summaries.ts';
import { poolCamerasMigration } from './005-pool-cameras.ts';

export const MIGRATIONS: readonly Migration[] = [segmentTimesMigration, poolUsageMigration, daySummariesMigration, poolCamerasMigration];

/** The layout this build reads and writes. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

export interface MigrationReport {
  from: number;
  to: number;
  applied: string[];
}

/**
 * Throws INDEX_SCHEMA_MISMATCH unless this build reads an index whose meta `schema` is
 * `stored` (undefined: a new index). Checked before any database is opened, so an
 * index of a newer build is not written to at all.
 */
export function assertSchemaReadable(stored: unknown): void {
  if (stored === undefined) return;
  if (typeof stored !== 'number' || !Number.isInteger(stored) || stored < 1 || stored > SCHEMA_VERSION) {
    throw new RecorderError(
      'INDEX_SCHEMA_MISMATCH',
      `index schema ${JSON.stringify(stored)}, this build reads ${SCHEMA_VERSION} and older: run a newer build, or reindex`,
    );
  }
}

/** Brings the index to SCHEMA_VERSION; throws INDEX_SCHEMA_MISMATCH for a newer one. */
export async function migrate(t: Tables): Promise<MigrationReport> {
  const stored = t.meta.get('schema');
  assertSchemaReadable(stored);
  if (typeof stored !== 'number') {
    // Nothing was ever written to it: it starts with this build's layout.
    await t.meta.put('schema', SCHEMA_VERSION);
    return { from: SCHEMA_VERSION, to: SCHEMA_VERSION, applied: [] };
  }
  const applied: string[] = [];
  for (const m of MIGRATIONS) {
    if (m.version <= stored) continue;
    await t.root.transaction(() => {
      m.up(t);
      void t.meta.put('schema', m.version);
    });
    applied.push(`${m.version}: ${m.name}`);
  }
  return { from: stored, to: SCHEMA_VERSION, applied };
}
