/**
 * @module
 * Brief jobs in Deno KV: sync jobs whose whole life fell between two journal writes (they
 * arrived and finished within one group commit, as nearly every short request does). Each one
 * was a record, a finished-index entry and their serialization on the main thread, ~8 µs a
 * job, all at once every few ms: a 0.25-0.5 ms stall under load that the requests arriving
 * meanwhile waited out. They are now written many to one entry, as JSON text:
 *
 *   ["brief", newest updatedAt of the write, smallest id of the entry] -> "[[id, node, …], …]"
 *
 * Retention purges whole entries by their time. A record is found by id from the arrival time
 * its id carries (lib/request_id.ts): every job of an entry arrived at most CLOCK_SLACK_MS before
 * the entry's time, so the entries from its arrival on hold it, and none before it holds only
 * jobs that arrived more than CLOCK_SLACK_MS after it, whatever the clock did between writes.
 */
import { arrivalOf } from "../request_id.ts";
import type { Priority } from "../priority.ts";
import type { JobRecord, SyncChange } from "./contract.ts";
import { isCounted, isFinal, type RecordState } from "./record_states.ts";

export const BRIEF = "brief";

/** What tells one brief record from another; the rest of a sync record is the same for all. */
type BriefTuple = [
  id: string,
  node: string,
  model: string,
  priority: Priority,
  state: RecordState,
  attempts: number,
  createdAt: number,
  updatedAt: number,
];

/** Characters per entry: KV stores a string as UTF-16 at worst, well under its 64 KiB. */
const ENTRY_CHARS = 24_000;

/**
 * How long before its entry's time a brief job may have arrived. A write's jobs normally span a
 * few ms; one retried after a store outage can span the outage, and its older jobs keep their
 * own record, so that a search never has to look further back than this.
 */
const CLOCK_SLACK_MS = 1000;

/**
 * When a job that may be kept in a brief entry arrived, or null when it may not. It must be new
 * in this write (not a retry of one that may have partly landed), finished without touching a
 * live counter (done, failed, cancelled), and have an id that carries an arrival time no later
 * than its last change, where a search by id starts.
 */
function briefArrival({ job, from, retried }: SyncChange): number | null {
  if (from !== null || retried || job.kind !== "sync" || job.node === null) return null;
  if (!isFinal(job.state) || isCounted(job.state)) return null;
  const arrival = arrivalOf(job.id);
  return arrival !== null && arrival <= job.updatedAt ? arrival : null;
}

/**
 * A write's changes, split into brief jobs and those that keep their own record (among them any
 * that could be brief but arrived more than CLOCK_SLACK_MS before the write's newest change).
 */
export function splitBrief(
  changes: readonly SyncChange[],
): { brief: JobRecord[]; single: SyncChange[] } {
  const arrivals = changes.map(briefArrival);
  let newest = -Infinity;
  changes.forEach(({ job }, i) => {
    if (arrivals[i] !== null) newest = Math.max(newest, job.updatedAt);
  });
  const brief: JobRecord[] = [];
  const single: SyncChange[] = [];
  changes.forEach((change, i) => {
    const arrival = arrivals[i];
    if (arrival !== null && arrival >= newest - CLOCK_SLACK_MS) brief.push(change.job);
    else single.push(change);
  });
  return { brief, single };
}

/** A brief entry: its key, its text, and how many jobs it holds. */
export interface BriefEntry {
  key: [typeof BRIEF, number, string];
  text: string;
  size: number;
}

/**
 * `jobs` (all brief) as entries under one time, the newest change among them, each under
 * ENTRY_CHARS, in id order so that one write's entries follow each other in the order a search
 * by id walks them.
 */
export function briefEntries(jobs: readonly JobRecord[]): BriefEntry[] {
  const sorted = [...jobs].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  let newest = 0;
  for (const job of sorted) newest = Math.max(newest, job.updatedAt);
  const entries: BriefEntry[] = [];
  // The brackets, then each part with its comma (one more than the text has).
  const EMPTY_CHARS = 2;
  let parts: string[] = [];
  let chars = EMPTY_CHARS;
  let first = "";
  const close = () => {
    if (parts.length === 0) return;
    entries.push({ key: [BRIEF, newest, first], text: `[${parts.join(",")}]`, size: parts.length });
    parts = [];
    chars = EMPTY_CHARS;
  };
  for (const job of sorted) {
    const tuple: BriefTuple = [
      job.id,
      job.node!,
      job.model,
      job.priority,
      job.state,
      job.attempts,
      job.createdAt,
      job.updatedAt,
    ];
    const part = JSON.stringify(tuple);
    if (chars + part.length + 1 > ENTRY_CHARS) close();
    if (parts.length === 0) first = job.id;
    parts.push(part);
    chars += part.length + 1;
  }
  close();
  return entries;
}

/** The records of a brief entry's text. */
export function briefRecords(text: string): JobRecord[] {
  return (JSON.parse(text) as BriefTuple[]).map((
    [id, node, model, priority, state, attempts, createdAt, updatedAt],
  ) => ({
    id,
    kind: "sync",
    model,
    priority,
    state,
    attempts,
    node,
    lane: null,
    order: 0,
    group: null,
    createdAt,
    updatedAt,
    payload: null,
    result: null,
  }));
}

/**
 * The brief record `id`, searched in `entries` (those from its arrival time on, in key order),
 * or null. Stops at the first entry whose jobs all arrived after it did.
 */
export async function findBrief(
  id: string,
  entries: (start: number) => AsyncIterable<Deno.KvEntry<string>>,
): Promise<JobRecord | null> {
  const arrival = arrivalOf(id);
  if (arrival === null) return null;
  for await (const entry of entries(arrival)) {
    const firstArrival = arrivalOf(entry.key[2] as string) ?? 0;
    if (firstArrival > arrival + CLOCK_SLACK_MS) return null;
    const found = briefRecords(entry.value).find((job) => job.id === id);
    if (found !== undefined) return found;
  }
  return null;
}
