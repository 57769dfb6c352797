/**
 * @module
 * The two classes of work: `interactive` (people waiting) and `batch` (background jobs, batch
 * API lines). A leaf module: the scheduler, the store, auth, config and the request path all
 * speak of it without depending on one another.
 */
export type Priority = "interactive" | "batch";
export const PRIORITIES: readonly Priority[] = ["interactive", "batch"];
