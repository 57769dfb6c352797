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
 * Needs `--v8-flags=--expose-gc` (the start and compile tasks pass it); without it this does
 * nothing and V8 collects when it sees fit.
 */

type Collect = (options?: { type: "minor" | "major" }) => void;

const COPIED_PER_MINOR = 32 * 1024 * 1024;
const RELEASED_PER_MAJOR = 64 * 1024 * 1024;
const MAJOR_DELAY_MS = 200;

export class MemoryRelease {
  #copied = 0;
  #released = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
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

  /** `bytes` of bodies that were held a while (queued, in flight) are dead now. */
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
}
