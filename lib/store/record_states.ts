/**
 * @module
 * The states a stored job record goes through, and the rules every store applies to them:
 * which are still open, which the live counters (/metrics) follow, and which of a batch's
 * counts a final one adds to. Written once here: the Deno KV store reads these constants and
 * the Redis scripts are generated from them, so the two stores cannot drift apart.
 *
 * A record's states are not a `Job`'s (lib/jobs.ts): a record can also be `abandoned`, which
 * only a recovery decides, when the node that held a sync job stopped renewing its lease.
 */

export const RECORD_STATES = [
  "queued",
  "running",
  "done",
  "failed",
  "cancelled",
  "abandoned",
  "dead",
] as const;

export type RecordState = (typeof RECORD_STATES)[number];

/** The counts a batch keeps of its finished lines. */
export type GroupBucket = "done" | "failed" | "cancelled";

export const GROUP_BUCKETS: readonly GroupBucket[] = ["done", "failed", "cancelled"];

interface StateRule {
  /** A node may still move it; a final record never changes again. */
  open: boolean;
  /** Kept in a live counter; the other states are only in `total`. */
  counted: boolean;
  /** The batch count a final async job in this state adds to (none while open). */
  bucket: GroupBucket | null;
}

const RULES: Readonly<Record<RecordState, StateRule>> = {
  queued: { open: true, counted: true, bucket: null },
  running: { open: true, counted: true, bucket: null },
  done: { open: false, counted: false, bucket: "done" },
  failed: { open: false, counted: false, bucket: "failed" },
  cancelled: { open: false, counted: false, bucket: "cancelled" },
  // Only sync jobs are abandoned, and they belong to no batch.
  abandoned: { open: false, counted: true, bucket: "failed" },
  // A line whose attempts ran out failed, as far as its batch is concerned.
  dead: { open: false, counted: true, bucket: "failed" },
};

export const OPEN_STATES: readonly RecordState[] = RECORD_STATES.filter((s) => RULES[s].open);
export const COUNTED_STATES: readonly RecordState[] = RECORD_STATES.filter((s) => RULES[s].counted);

export function isFinal(state: RecordState): boolean {
  return !RULES[state].open;
}

export function isCounted(state: RecordState): boolean {
  return RULES[state].counted;
}

/** Which of a batch's counts a final async job adds to; null while it is open. */
export function groupBucket(state: RecordState): GroupBucket | null {
  return RULES[state].bucket;
}
