/**
 * A numbered change of the index's layout. `up` runs inside one write transaction with
 * the bump of meta `schema` to `version`: after a crash either both committed or
 * neither, so a migration never runs on its own half-written result.
 */
import type { Tables } from '../tables.ts';

export interface Migration {
  /** The schema version the index has once this ran. */
  version: number;
  /** What it changes and why (logged when it runs). */
  name: string;
  /** Synchronous: it runs inside the transaction that records `version`. */
  up(t: Tables): void;
}
