/**
 * The seqs a node of a cluster gives its pictures (docs/design/pictures.md "Copies in a
 * cluster"): a picture's index key is `[atMs, seq]`, and a holder indexes the copies of
 * other nodes' pictures beside its own, so two nodes storing pictures of one instant
 * must not both use seq 0. Each node takes the seqs `slot + k × SEQ_SLOTS` (its slot from
 * its node id), the next above every seq its index holds at that instant (its own and
 * the copies). Outside a cluster (no slot) seqs run 0, 1, 2… as before.
 *
 * Two nodes whose ids hash to one slot (1 in 1024 for a pair) clash as before: such a
 * copy is not indexed on the other (counted `skipped`).
 */
import { createHash } from 'node:crypto';

export const SEQ_SLOTS = 1024;

/** The slot of a node id (the first 32 bits of its SHA-256). */
export function seqSlotOf(nodeId: string): number {
  return createHash('sha256').update(nodeId).digest().readUInt32BE(0) % SEQ_SLOTS;
}

/** The first seq to give at an instant whose highest seq indexed is `lastSeq` (-1: none); `slot` null: none. */
export function firstSeq(lastSeq: number, slot: number | null): number {
  if (slot === null) return lastSeq + 1;
  return (Math.floor(lastSeq / SEQ_SLOTS) + 1) * SEQ_SLOTS + slot;
}

/** How far apart a node's seqs of one instant are. */
export function seqStep(slot: number | null): number {
  return slot === null ? 1 : SEQ_SLOTS;
}
