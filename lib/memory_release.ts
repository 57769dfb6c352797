/**
 * @module
 * Gives the memory of big request bodies back soon, with two hints to V8's collector:
 * - Fresh garbage: a body arrives as 64 KB chunks that are copied into its buffer and then
 *   dropped, and fetch sends a copy of the body it forwards. V8 frees such buffers only when
 *   it collects its young generation, which their tiny wrapper objects hardly fill: 60 MB
 *   bodies would leave their size again in dead copies. Every 32 MB of it, a young-generation
 *   collection (well under a millisecond) frees them.
 * - After a burst of big bodies was answered, nothing may allocate enough to start a
 *   collection, and their buffers would stay taken (a model's memory, on a unified-memory box).
 *   Once 64 MB of bodies were let go, one full collection is asked for a moment later.
 * - After a burst of admissions (thousands of requests queued at once): V8 grows its young
 *   generation to the most it may (~32 MB) while many new objects survive, and keeps it so
 *   long after, idle or not (measured: 25 s idle, no shrink). Once 2,000 requests waited at
 *   once and then none came for a second, one collection that also shrinks the young
 *   generation gives it back: ~38 MB at 10,000 waiting jobs, for ~110-160 ms of CPU once per
 *   burst. A short queue, however long the traffic lasts, never asks for it.
 * Needs `--v8-flags=--expose-gc` (the start and compile tasks pass it); without it this does
 * nothing and V8 collects when it sees fit.
 */

type Collect = (
  options?: { type: "minor" | "major"; execution?: "sync"; flavor?: "last-resort" },
) => void;

const COPIED_PER_MINOR = 32 * 1024 * 1024;
const RELEASED_PER_MAJOR = 64 * 1024 * 1024;
const MAJOR_DELAY_MS = 200;
const BURST_WAITING = 2000;
const BURST_QUIET_MS = 1000;

export class MemoryRelease {
  #copied = 0;
  #released = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #admitted = 0;
  #burstTimer: ReturnType<typeof setTimeout> | null = null;
  /** Released for this burst: not again until the queue was short again. */
  #burstReleased = false;
  readonly #gc: Collect | null;

  constructor(gc = (globalThis as { gc?: Collect }).gc ?? null) {
    this.#gc = gc;
  }

  /** `bytes` of buffers made a moment ago are dead now (copied chunks, a sent copy). */
  freshGarbage(bytes: number): void {
    if (this.#gc === null) return;
    this.#copied += bytes;
    if (this.#copied < COPIED_PER_MINOR) return;
    this.#copied = 0;
    this.#gc({ type: "minor" });
  }

  /** `bytes` of bodies that were held a while (queued, sent) are dead now. */
  heldGarbage(bytes: number): void {
    if (this.#gc === null) return;
    this.#released += bytes;
    if (this.#released < RELEASED_PER_MAJOR || this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#released = 0;
      this.#gc!();
    }, MAJOR_DELAY_MS);
    Deno.unrefTimer(this.#timer);
  }

  /** Forgets pending collections (shutdown). */
  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#burstTimer !== null) clearTimeout(this.#burstTimer);
    this.#timer = this.#burstTimer = null;
  }

  /** A request was admitted to the queue, where `waiting` requests wait now. */
  admitted(waiting: number): void {
    if (this.#gc === null) return;
    this.#admitted++;
    if (waiting < BURST_WAITING) this.#burstReleased = false;
    else if (!this.#burstReleased && this.#burstTimer === null) this.#awaitQuiet();
  }

  #awaitQuiet(): void {
    const seen = this.#admitted;
    this.#burstTimer = setTimeout(() => {
      this.#burstTimer = null;
      if (this.#admitted !== seen) return this.#awaitQuiet(); // still arriving
      this.#burstReleased = true;
      // "last-resort" is the flavor that gives back the young generation's grown capacity.
      this.#gc!({ type: "major", execution: "sync", flavor: "last-resort" });
    }, BURST_QUIET_MS);
    Deno.unrefTimer(this.#burstTimer);
  }
}
